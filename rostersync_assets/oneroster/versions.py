"""OneRoster 1.0 and 1.2 CSV layouts, and their conversion to the canonical 1.1 tables rostersync syncs.

The diff and the LMS payloads know one shape: the seven 1.1 files of spec.py. Other versions are read
in their own layout (so their headers are checked against what that version really defines) and then
converted, every renamed, blank-filled or derived column reported once per file (`version.converted`).

1.0 (REFERENCE §6 "1.0 name" notes, §9): no manifest, a few columns renamed in 1.1, some 1.1 columns
missing. Its exact column order is not confirmed, so 1.0 headers are matched by name only.
1.2 (REFERENCE §7): the same files except users.csv, whose role and org membership moved to roles.csv.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rostersync_assets.oneroster import spec
from rostersync_assets.oneroster.diagnostics import Diagnostic
from rostersync_assets.oneroster.models import schema_of, validate_with
from rostersync_assets.oneroster.spec import COMMON_COLUMNS, LINE_COLUMN, FileSpec, Reference
from rostersync_assets.oneroster.frames import is_in

# --- layouts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """What one OneRoster version delivers.

    synced: entity -> accepted delivered layouts of that file (several for 1.2 users.csv), best first.
    auxiliary: files read and validated because the conversion needs them, but not synced (1.2 roles).
    unsynced: entity -> columns of files whose structure is only checked (gradebook, resources).
    ordered: whether header order is known well enough to warn about deviations.
    """

    version: str
    synced: dict[str, tuple[FileSpec, ...]]
    auxiliary: dict[str, FileSpec] = field(default_factory=dict)
    unsynced: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ordered: bool = True

    @property
    def declarable(self) -> frozenset[str]:
        """The `file.<entity>` names a manifest of this version may declare."""
        return frozenset(self.synced) | frozenset(self.auxiliary) | frozenset(self.unsynced)


def _v1_0_layouts(file_spec: FileSpec) -> tuple[FileSpec, ...]:
    """A 1.0 file's layouts: the 1.1 columns minus the ones 1.1 added, under their 1.0 names; and the
    same with names that differ from 1.1 only in case already fixed (normalize.py does that)."""
    renames = V1_0_RENAMES.get(file_spec.entity, {})
    kept = [column for column in file_spec.columns if column not in V1_0_ADDED.get(file_spec.entity, frozenset())]
    old_names = {new: old for old, new in renames.items()}
    as_1_0 = tuple(old_names.get(column, column) for column in kept)
    case_fixed = tuple(
        column if old_names.get(column, column).lower() == column.lower() else old_names[column] for column in kept
    )
    layouts = dict.fromkeys([as_1_0, case_fixed])
    return tuple(FileSpec(entity=file_spec.entity, columns=columns, required=frozenset()) for columns in layouts)


# 1.0 name -> 1.1 name, per file (REFERENCE §6, §9).
V1_0_RENAMES: dict[str, dict[str, str]] = {
    "courses": {"schoolYearId": "schoolYearSourcedId", "grade": "grades"},
    "classes": {"grade": "grades", "termSourcedId": "termSourcedIds"},
    "users": {"userId": "userIds", "agents": "agentSourcedIds"},
    "demographics": {"userSourcedId": "sourcedId", "birthdate": "birthDate"},
}
# 1.1 columns a 1.0 file does not have (REFERENCE §6 "new in 1.1", §9).
V1_0_ADDED: dict[str, frozenset[str]] = {
    "academicSessions": frozenset({"schoolYear"}),
    "courses": frozenset({"subjectCodes"}),
    "classes": frozenset({"subjectCodes", "periods"}),
    "users": frozenset({"enabledUser", "middleName", "grades", "password"}),
    "enrollments": frozenset({"beginDate", "endDate"}),
}

V1_0 = Layout(
    version="1.0",
    synced={file_spec.entity: _v1_0_layouts(file_spec) for file_spec in spec.SYNCED_FILES},
    ordered=False,
)

V1_1 = Layout(
    version="1.1",
    synced={file_spec.entity: (file_spec,) for file_spec in spec.SYNCED_FILES},
    unsynced=spec.UNSYNCED_COLUMNS_V1_1,
)

_V1_2_USER_COLUMNS_HEAD = (
    "enabledUser", "username", "userIds", "givenName", "familyName", "middleName", "identifier", "email",
    "sms", "phone", "agentSourcedIds", "grades", "password", "userMasterIdentifier",
)
_V1_2_USER_COLUMNS_TAIL = (
    "preferredGivenName", "preferredMiddleName", "preferredFamilyName", "primaryOrgSourcedId", "pronouns",
)
USERS_V1_2_1 = FileSpec(
    entity="users",
    columns=COMMON_COLUMNS + _V1_2_USER_COLUMNS_HEAD + _V1_2_USER_COLUMNS_TAIL,
    required=frozenset({"sourcedId", "enabledUser", "username", "givenName", "familyName"}),
    references=(
        Reference("agentSourcedIds", "users", is_list=True, required=False),
        Reference("primaryOrgSourcedId", "orgs", required=False),
    ),
    booleans=frozenset({"enabledUser"}),
)
# 1.2 before the 1.2.1 binding also had resourceSourcedIds (REFERENCE §7.2); both layouts are accepted.
USERS_V1_2_0 = FileSpec(
    entity="users",
    columns=COMMON_COLUMNS + _V1_2_USER_COLUMNS_HEAD + ("resourceSourcedIds",) + _V1_2_USER_COLUMNS_TAIL,
    required=USERS_V1_2_1.required,
    references=USERS_V1_2_1.references,
    booleans=USERS_V1_2_1.booleans,
)

ROLES_V1_2 = FileSpec(
    entity="roles",
    columns=COMMON_COLUMNS
    + ("userSourcedId", "roleType", "role", "beginDate", "endDate", "orgSourcedId", "userProfileSourcedId"),
    required=frozenset({"sourcedId", "userSourcedId", "roleType", "role", "orgSourcedId"}),
    references=(
        Reference("userSourcedId", "users"),
        Reference("orgSourcedId", "orgs"),
        Reference("userProfileSourcedId", "userProfiles", required=False),
    ),
    enums={
        "roleType": frozenset({"primary", "secondary"}),
        "role": frozenset(
            {
                "aide", "counselor", "districtAdministrator", "guardian", "parent", "principal", "proctor",
                "relative", "siteAdministrator", "student", "systemAdministrator", "teacher",
            }
        ),
    },
    dates=frozenset({"beginDate", "endDate"}),
    extensible=frozenset({"role"}),
)

USER_PROFILES_V1_2 = FileSpec(
    entity="userProfiles",
    columns=COMMON_COLUMNS
    + (
        "userSourcedId", "profileType", "vendorId", "applicationId", "description", "credentialType",
        "username", "password",
    ),
    required=frozenset({"sourcedId", "userSourcedId", "profileType", "vendorId", "credentialType", "username"}),
    references=(Reference("userSourcedId", "users"),),
)

_UNSYNCED_COLUMNS_V1_2: dict[str, tuple[str, ...]] = {
    **spec.UNSYNCED_COLUMNS_V1_1,
    "categories": COMMON_COLUMNS + ("title", "weight"),
    "lineItems": COMMON_COLUMNS
    + (
        "title", "description", "assignDate", "dueDate", "classSourcedId", "categorySourcedId",
        "academicSessionSourcedId", "resultValueMin", "resultValueMax", "schoolSourcedId",
    ),
    "results": COMMON_COLUMNS
    + (
        "lineItemSourcedId", "studentSourcedId", "scoreStatus", "score", "scoreDate", "comment", "textScore",
        "classSourcedId", "inProgress", "incomplete", "late", "missing",
    ),
    "scoreScales": COMMON_COLUMNS
    + ("title", "type", "orgSourcedId", "courseSourcedId", "classSourcedId", "scoreScaleValue"),
    "lineItemScoreScales": COMMON_COLUMNS + ("title", "lineItemSourcedId", "scoreScaleSourcedId"),
    "resultScoreScales": COMMON_COLUMNS + ("title", "resultSourcedId", "scoreScaleSourcedId"),
    "lineItemLearningObjectiveIds": COMMON_COLUMNS + ("lineItemSourcedId", "source", "learningObjectiveId"),
    "resultLearningObjectiveIds": COMMON_COLUMNS
    + ("resultSourcedId", "source", "learningObjectiveId", "score", "textScore"),
    "userResources": COMMON_COLUMNS
    + ("userSourcedId", "orgSourcedId", "classSourcedId", "resourceSourcedId"),
}

V1_2 = Layout(
    version="1.2",
    synced={
        **{file_spec.entity: (file_spec,) for file_spec in spec.SYNCED_FILES},
        "users": (USERS_V1_2_1, USERS_V1_2_0),
    },
    auxiliary={"roles": ROLES_V1_2, "userProfiles": USER_PROFILES_V1_2},
    unsynced=_UNSYNCED_COLUMNS_V1_2,
)

LAYOUTS: tuple[Layout, ...] = (V1_0, V1_1, V1_2)


def layout_for(version: str) -> Layout | None:
    """The layout a manifest's `oneroster.version` selects; None for versions rostersync cannot read."""
    if spec.is_v1_2(version):
        return V1_2
    return V1_1 if version == "1.1" else None


def resembled_version(entity: str, header: list[str], declared: Layout) -> str | None:
    """The other version whose layout of `entity` this header fits, or whose own column names it uses.

    Answers "why does this header not fit?" for M11 (a 1.1 manifest over 1.0 headers): a header that
    fits another version completely, or carries a column name only that version uses, names it.
    """
    delivered = set(header)
    declared_columns = {column for layout in declared.synced.get(entity, ()) for column in layout.columns}
    others = [
        (layout.version, set(file_layout.columns))
        for layout in LAYOUTS
        if layout.version != declared.version
        for file_layout in layout.synced.get(entity, ())
    ]
    fits = [version for version, columns in others if columns <= delivered]
    own_names = [version for version, columns in others if (columns - declared_columns) & delivered]
    return next(iter(fits + own_names), None)


# --- conversion to the canonical 1.1 tables -------------------------------------------------------

# roles.csv role (1.2) -> users.role (1.1). The administrator family collapses into 1.1's administrator;
# a counselor is non-teaching staff, and least privilege maps it to aide rather than administrator.
ROLE_TO_V1_1: dict[str, str] = {
    "districtAdministrator": "administrator",
    "siteAdministrator": "administrator",
    "systemAdministrator": "administrator",
    "principal": "administrator",
    "counselor": "aide",
}


def converted_note(file_name: str, what: str) -> Diagnostic:
    """The single per-file report that a table was converted to the canonical 1.1 columns."""
    return Diagnostic.create("fixed", "version.converted", what, file=file_name)


def from_v1_0(entity: str, table: pd.DataFrame) -> tuple[pd.DataFrame, list[Diagnostic]]:
    """A 1.0 table as the canonical 1.1 table: renamed columns, 1.1 additions blank or derived."""
    renames = {old: new for old, new in V1_0_RENAMES.get(entity, {}).items() if old in table.columns}
    table = table.rename(columns=renames)
    added = sorted(V1_0_ADDED.get(entity, frozenset()))
    for column in added:
        table[column] = ""
    derived = []
    if entity == "academicSessions":
        table["schoolYear"] = _school_years(table)
        derived.append("schoolYear from the enclosing schoolYear session")
    if entity == "users":
        # 1.0 had no way to curtail logins: every delivered user could sign in.
        table["enabledUser"] = "true"
        derived.append("enabledUser as true")
    blank = [column for column in added if column not in ("schoolYear", "enabledUser")]
    parts = [f"renamed {', '.join(f'{old}->{new}' for old, new in renames.items())}" if renames else "",
             f"added blank {', '.join(blank)}" if blank else "", f"derived {', '.join(derived)}" if derived else ""]
    if not any(parts):
        return _canonical(entity, table), []
    message = "OneRoster 1.0 file converted to 1.1 columns: " + "; ".join(filter(None, parts))
    return _canonical(entity, table), [converted_note(spec.SPECS[entity].file_name, message)]


def _school_years(sessions: pd.DataFrame) -> pd.Series:
    """schoolYear (the year the school year ends) of each 1.0 session, "" when it cannot be known.

    A schoolYear session's own end year; other sessions take it from their parent chain, else from the
    schoolYear session whose dates contain their start date. Session files are small: plain Python.
    """
    by_id = dict(zip(sessions["sourcedId"], zip(sessions["type"], sessions["endDate"], sessions["parentSourcedId"])))
    school_years = [
        (start, end, end[:4])
        for kind, start, end in zip(sessions["type"], sessions["startDate"], sessions["endDate"])
        if kind == "schoolYear" and end[:4].isdigit()
    ]

    def year_of(session_id: str, start: str, seen: frozenset[str] = frozenset()) -> str:
        kind, end, parent = by_id.get(session_id, ("", "", ""))
        if kind == "schoolYear" and end[:4].isdigit():
            return end[:4]
        if parent in by_id and parent not in seen:
            return year_of(parent, start, seen | {session_id})
        enclosing = {year for year_start, year_end, year in school_years if year_start <= start <= year_end}
        return enclosing.pop() if len(enclosing) == 1 else ""

    return pd.Series(
        [year_of(session_id, start) for session_id, start in zip(sessions["sourcedId"], sessions["startDate"])],
        index=sessions.index,
        dtype="str",
    )


def _canonical(entity: str, table: pd.DataFrame) -> pd.DataFrame:
    """Exactly the 1.1 columns in spec order, then `_line`."""
    return table[[*spec.SPECS[entity].columns, LINE_COLUMN]]


@dataclass
class Memberships:
    """1.2 roles reduced to what a 1.1 user record holds: the primary role and the org list per user."""

    role: pd.Series  # user sourcedId -> 1.1 role
    orgs: pd.Series  # user sourcedId -> sorted comma list of org sourcedIds


def check_roles(
    roles: pd.DataFrame, profiles: pd.DataFrame | None, users: pd.DataFrame | None
) -> tuple[pd.DataFrame, list[Diagnostic]]:
    """roles.csv rows that pass its value rules, one primary per (user, org) (R15) and the same user
    as their userProfile (R16); the rejected rows are reported."""
    found = validate_with(schema_of(ROLES_V1_2), ROLES_V1_2.file_name, roles)
    roles = _without_lines(roles, found)
    group = [roles["userSourcedId"], roles["orgSourcedId"]]
    primaries = (roles["roleType"] == "primary").groupby(group).transform("sum")
    bad = roles[primaries != 1]
    found += _row_errors(
        bad, "roles.primary_count", "a user needs exactly one primary role per org", "roleType", "roleType"
    )
    if profiles is not None:
        owner = roles["userProfileSourcedId"].map(dict(zip(profiles["sourcedId"], profiles["userSourcedId"])))
        mismatch = roles[(roles["userProfileSourcedId"] != "") & (owner != roles["userSourcedId"])]
        found += _row_errors(
            mismatch, "roles.profile_user_mismatch", "the userProfile is missing or belongs to another user",
            "userProfileSourcedId", "userProfileSourcedId",
        )
    if users is not None:
        unknown = roles[~is_in(roles["userSourcedId"], users["sourcedId"])]
        found += _row_errors(unknown, "reference.missing", "no row of users.csv has this sourcedId",
                             "userSourcedId", "userSourcedId")
    found.sort(key=lambda d: d.line or 0)
    return _without_lines(roles, found), found


def check_profiles(profiles: pd.DataFrame, users: pd.DataFrame | None) -> tuple[pd.DataFrame, list[Diagnostic]]:
    """userProfiles.csv rows that pass its value rules and name a delivered user (R17)."""
    found = validate_with(schema_of(USER_PROFILES_V1_2), USER_PROFILES_V1_2.file_name, profiles)
    if users is not None:
        unknown = profiles[~is_in(profiles["userSourcedId"], users["sourcedId"])]
        found += _row_errors(unknown, "reference.missing", "no row of users.csv has this sourcedId",
                             "userSourcedId", "userSourcedId", file=USER_PROFILES_V1_2.file_name)
    found.sort(key=lambda d: d.line or 0)
    return _without_lines(profiles, found), found


def memberships(roles: pd.DataFrame, primary_org: pd.Series) -> Memberships:
    """Per user: all orgs held (sorted) and the 1.1 role of the primary role in the primary org,
    else in the first org by id. `primary_org`: user sourcedId -> primaryOrgSourcedId."""
    live = roles[roles["status"] != "tobedeleted"]
    orgs = live.groupby("userSourcedId")["orgSourcedId"].agg(lambda ids: ",".join(sorted(set(ids))))
    primary = live[live["roleType"] == "primary"]
    in_primary_org = primary["orgSourcedId"].to_numpy() == primary["userSourcedId"].map(primary_org).to_numpy()
    chosen = (
        primary.assign(_first=~in_primary_org)
        .sort_values(["userSourcedId", "_first", "orgSourcedId"], kind="stable")
        .drop_duplicates("userSourcedId")
    )
    role = chosen.set_index("userSourcedId")["role"]
    return Memberships(role=role.replace(ROLE_TO_V1_1), orgs=orgs)


def from_v1_2_users(
    users: pd.DataFrame, roles: pd.DataFrame | None
) -> tuple[pd.DataFrame, list[Diagnostic]]:
    """A 1.2 users table as the canonical 1.1 table: role and orgSourcedIds derived from roles.csv.

    Users without a usable role keep both blank, so validation rejects them as value.required.
    """
    found = []
    primary_org = pd.Series(users["primaryOrgSourcedId"].to_numpy(), index=users["sourcedId"].to_numpy())
    if roles is None:
        member = Memberships(role=pd.Series(dtype="str"), orgs=pd.Series(dtype="str"))
    else:
        member = memberships(roles, primary_org[~primary_org.index.duplicated()])
        found += _primary_org_without_role(users, roles)
    table = users.assign(
        role=users["sourcedId"].map(member.role).fillna("").astype("str"),
        orgSourcedIds=users["sourcedId"].map(member.orgs).fillna("").astype("str"),
    )
    message = "OneRoster 1.2 users converted to 1.1 columns: role and orgSourcedIds derived from roles.csv"
    return _canonical("users", table), [*found, converted_note("users.csv", message)]


def _primary_org_without_role(users: pd.DataFrame, roles: pd.DataFrame) -> list[Diagnostic]:
    """R14: a primaryOrgSourcedId should be an org the user holds a role in (a warning)."""
    held = set(zip(roles["userSourcedId"], roles["orgSourcedId"]))
    given = users[users["primaryOrgSourcedId"] != ""]
    pairs = zip(given["sourcedId"], given["primaryOrgSourcedId"])
    lonely = given[np.fromiter((pair not in held for pair in pairs), dtype=bool, count=len(given))]
    return _row_errors(
        lonely, "roles.primary_org_without_role", "roles.csv has no role of this user in the primary org",
        "primaryOrgSourcedId", "primaryOrgSourcedId", file="users.csv", severity="warning",
    )


def _row_errors(
    rows: pd.DataFrame, rule: str, message: str, column: str, value_column: str,
    file: str = "roles.csv", severity: str = "error",
) -> list[Diagnostic]:
    return [
        Diagnostic.create(severity, rule, message, file=file, line=int(line), column=column, value=value)  # type: ignore[arg-type]
        for line, value in zip(rows[LINE_COLUMN], rows[value_column])
    ]


def _without_lines(table: pd.DataFrame, found: list[Diagnostic]) -> pd.DataFrame:
    lines = {d.line for d in found if d.severity == "error"}
    return table[~table[LINE_COLUMN].isin(lines)] if lines else table
