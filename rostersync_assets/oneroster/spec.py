"""The OneRoster 1.1 CSV files rostersync syncs: columns in spec order, required values and references.

This module is the single description of the format that the reader, the pandera models, the
reference rules, the diff and the LMS payloads all derive from, so a column is named in one place.
Source: ../shared/oneroster/REFERENCE.md §6 (1.1 columns) and §8 (reference rules).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# Every table carries the 1-based line of each row in its file (the header is line 1), so any later
# finding about a row can point a data steward at it.
LINE_COLUMN = "_line"
# Tables built from several files (Clever's users come from students.csv and teachers.csv) also carry
# the file each row came from: `_line` is a line of that file, and (`_file`, `_line`) names the row.
# Tables read from their own OneRoster file have no `_file`: the file is the table's.
FILE_COLUMN = "_file"

# Every OneRoster file starts with these three columns; status/dateLastModified are blank in bulk.
COMMON_COLUMNS: tuple[str, ...] = ("sourcedId", "status", "dateLastModified")

# Columns whose values are personal data: never logged, never in Dagster metadata or diagnostics
# (values are masked), never sent to the LMS when the column is a secret (password).
PERSONAL_COLUMNS: frozenset[str] = frozenset(
    {
        "username",
        "userIds",
        "givenName",
        "familyName",
        "middleName",
        "identifier",
        "email",
        "sms",
        "phone",
        "password",
        "birthDate",
        "cityOfBirth",
        "countryOfBirthCode",
        "stateOfBirthAbbreviation",
    }
)

# Columns that are never sent to the LMS: plaintext passwords appear in real feeds (REFERENCE M29).
NEVER_SENT_COLUMNS: frozenset[str] = frozenset({"password"})


@dataclass(frozen=True)
class Reference:
    """A column whose value (or comma-separated list of values) must name a record of another entity."""

    column: str
    target: str
    is_list: bool = False
    required: bool = True


@dataclass(frozen=True)
class FileSpec:
    """One OneRoster CSV file: its entity name (file name without `.csv`) and its columns in order."""

    entity: str
    columns: tuple[str, ...]
    required: frozenset[str]
    references: tuple[Reference, ...] = field(default_factory=tuple)
    enums: dict[str, frozenset[str]] = field(default_factory=dict)
    dates: frozenset[str] = frozenset()
    booleans: frozenset[str] = frozenset()
    # Columns holding a four-digit Year (`YYYY`, REFERENCE §4).
    years: frozenset[str] = frozenset()
    # Enumerated columns that also accept an extension token `ext:<name>` (OneRoster 1.2, REFERENCE §4).
    extensible: frozenset[str] = frozenset()

    @property
    def file_name(self) -> str:
        return f"{self.entity}.csv"


_BOOL = frozenset({"true", "false"})

ORGS = FileSpec(
    entity="orgs",
    columns=COMMON_COLUMNS + ("name", "type", "identifier", "parentSourcedId"),
    required=frozenset({"sourcedId", "name", "type"}),
    references=(Reference("parentSourcedId", "orgs", required=False),),
    enums={"type": frozenset({"department", "school", "district", "local", "state", "national"})},
)

ACADEMIC_SESSIONS = FileSpec(
    entity="academicSessions",
    columns=COMMON_COLUMNS
    + ("title", "type", "startDate", "endDate", "parentSourcedId", "schoolYear"),
    required=frozenset({"sourcedId", "title", "type", "startDate", "endDate", "schoolYear"}),
    references=(Reference("parentSourcedId", "academicSessions", required=False),),
    enums={"type": frozenset({"gradingPeriod", "semester", "schoolYear", "term"})},
    dates=frozenset({"startDate", "endDate"}),
    years=frozenset({"schoolYear"}),
)

COURSES = FileSpec(
    entity="courses",
    columns=COMMON_COLUMNS
    + (
        "schoolYearSourcedId",
        "title",
        "courseCode",
        "grades",
        "orgSourcedId",
        "subjects",
        "subjectCodes",
    ),
    required=frozenset({"sourcedId", "title", "orgSourcedId"}),
    references=(
        Reference("orgSourcedId", "orgs"),
        Reference("schoolYearSourcedId", "academicSessions", required=False),
    ),
)

CLASSES = FileSpec(
    entity="classes",
    columns=COMMON_COLUMNS
    + (
        "title",
        "grades",
        "courseSourcedId",
        "classCode",
        "classType",
        "location",
        "schoolSourcedId",
        "termSourcedIds",
        "subjects",
        "subjectCodes",
        "periods",
    ),
    required=frozenset(
        {"sourcedId", "title", "courseSourcedId", "classType", "schoolSourcedId", "termSourcedIds"}
    ),
    references=(
        Reference("courseSourcedId", "courses"),
        Reference("schoolSourcedId", "orgs"),
        Reference("termSourcedIds", "academicSessions", is_list=True),
    ),
    enums={"classType": frozenset({"homeroom", "scheduled"})},
)

USERS = FileSpec(
    entity="users",
    columns=COMMON_COLUMNS
    + (
        "enabledUser",
        "orgSourcedIds",
        "role",
        "username",
        "userIds",
        "givenName",
        "familyName",
        "middleName",
        "identifier",
        "email",
        "sms",
        "phone",
        "agentSourcedIds",
        "grades",
        "password",
    ),
    required=frozenset(
        {"sourcedId", "enabledUser", "orgSourcedIds", "role", "username", "givenName", "familyName"}
    ),
    references=(
        Reference("orgSourcedIds", "orgs", is_list=True),
        Reference("agentSourcedIds", "users", is_list=True, required=False),
    ),
    enums={
        "role": frozenset(
            {
                "administrator",
                "aide",
                "guardian",
                "parent",
                "proctor",
                "relative",
                "student",
                "teacher",
            }
        )
    },
    booleans=frozenset({"enabledUser"}),
)

ENROLLMENTS = FileSpec(
    entity="enrollments",
    columns=COMMON_COLUMNS
    + (
        "classSourcedId",
        "schoolSourcedId",
        "userSourcedId",
        "role",
        "primary",
        "beginDate",
        "endDate",
    ),
    required=frozenset({"sourcedId", "classSourcedId", "schoolSourcedId", "userSourcedId", "role"}),
    references=(
        Reference("classSourcedId", "classes"),
        Reference("userSourcedId", "users"),
        Reference("schoolSourcedId", "orgs"),
    ),
    enums={"role": frozenset({"administrator", "proctor", "student", "teacher"})},
    dates=frozenset({"beginDate", "endDate"}),
    booleans=frozenset({"primary"}),
)

DEMOGRAPHICS = FileSpec(
    entity="demographics",
    columns=COMMON_COLUMNS
    + (
        "birthDate",
        "sex",
        "americanIndianOrAlaskaNative",
        "asian",
        "blackOrAfricanAmerican",
        "nativeHawaiianOrOtherPacificIslander",
        "white",
        "demographicRaceTwoOrMoreRaces",
        "hispanicOrLatinoEthnicity",
        "countryOfBirthCode",
        "stateOfBirthAbbreviation",
        "cityOfBirth",
        "publicSchoolResidenceStatus",
    ),
    required=frozenset({"sourcedId"}),
    references=(Reference("sourcedId", "users"),),
    enums={"sex": frozenset({"male", "female"})},
    dates=frozenset({"birthDate"}),
    booleans=frozenset(
        {
            "americanIndianOrAlaskaNative",
            "asian",
            "blackOrAfricanAmerican",
            "nativeHawaiianOrOtherPacificIslander",
            "white",
            "demographicRaceTwoOrMoreRaces",
            "hispanicOrLatinoEthnicity",
        }
    ),
)

# Parents first: the order in which upserts reach the LMS (deactivations go in reverse).
SYNCED_FILES: tuple[FileSpec, ...] = (
    ORGS,
    ACADEMIC_SESSIONS,
    COURSES,
    CLASSES,
    USERS,
    DEMOGRAPHICS,
    ENROLLMENTS,
)
SPECS: dict[str, FileSpec] = {spec.entity: spec for spec in SYNCED_FILES}
ENTITIES: tuple[str, ...] = tuple(spec.entity for spec in SYNCED_FILES)


MANIFEST_FILE = "manifest.csv"
# Manifest modes per file (REFERENCE §2/§3): absent never means "delete everything".
FILE_MODES: frozenset[str] = frozenset({"bulk", "delta", "absent"})


# The other 1.1 data files' columns (REFERENCE §6.8/§6.9): their structure is checked, they are not synced.
UNSYNCED_COLUMNS_V1_1: dict[str, tuple[str, ...]] = {
    "categories": COMMON_COLUMNS + ("title",),
    "classResources": COMMON_COLUMNS + ("title", "classSourcedId", "resourceSourcedId"),
    "courseResources": COMMON_COLUMNS + ("title", "courseSourcedId", "resourceSourcedId"),
    "lineItems": COMMON_COLUMNS
    + (
        "title", "description", "assignDate", "dueDate", "classSourcedId", "categorySourcedId",
        "gradingPeriodSourcedId", "resultValueMin", "resultValueMax",
    ),
    "resources": COMMON_COLUMNS + ("vendorResourceId", "title", "roles", "importance", "vendorId", "applicationId"),
    "results": COMMON_COLUMNS
    + ("lineItemSourcedId", "studentSourcedId", "scoreStatus", "score", "scoreDate", "comment"),
}

UNSYNCED_ENTITIES_V1_1: frozenset[str] = frozenset(UNSYNCED_COLUMNS_V1_1)


# OneRoster 1.2 keeps the 1.1 columns of these files but widens their vocabularies (REFERENCE §5, §7.1):
# most enumerations accept `ext:` tokens and `sex` gains unspecified/other. users.role is not widened:
# it is rostersync's canonical 1.1 role, derived from roles.csv for 1.2 packages.
_V1_2_EXTENSIBLE: dict[str, frozenset[str]] = {
    "orgs": frozenset({"type"}),
    "academicSessions": frozenset({"type"}),
    "classes": frozenset({"classType"}),
    "enrollments": frozenset({"role"}),
    "demographics": frozenset({"sex"}),
}
_V1_2_ENUM_ADDITIONS: dict[str, dict[str, frozenset[str]]] = {
    "demographics": {"sex": frozenset({"unspecified", "other"})},
}


def is_v1_2(version: str) -> bool:
    """`oneroster.version` 1.2 and 1.2.x (1.2.1 producers write either) are the same CSV binding family."""
    return version == "1.2" or version.startswith("1.2.")


def canonical_spec(entity: str, version: str) -> FileSpec:
    """The synced file's spec with the value vocabularies of `version` (the columns are always 1.1's)."""
    file_spec = SPECS[entity]
    if not is_v1_2(version):
        return file_spec
    additions = _V1_2_ENUM_ADDITIONS.get(entity, {})
    enums = {column: allowed | additions.get(column, frozenset()) for column, allowed in file_spec.enums.items()}
    return replace(file_spec, enums=enums, extensible=_V1_2_EXTENSIBLE.get(entity, frozenset()))


def entity_of_file(file_name: str) -> str | None:
    """The synced entity a delivered file holds (`users.csv` -> `users`), or None for other files."""
    stem = file_name[:-4] if file_name.endswith(".csv") else file_name
    return stem if stem in SPECS else None
