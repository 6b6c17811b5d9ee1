"""Validating read OneRoster 1.1 packages: value rules, unique sourcedIds, references, real samples, speed."""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rostersync_assets.oneroster import models, spec
from rostersync_assets.oneroster.diagnostics import Diagnostic
from rostersync_assets.oneroster.models import schema_for, validate_table
from rostersync_assets.oneroster.profile import STRICT, DistrictProfile
from rostersync_assets.oneroster.reader import LINE_COLUMN, RosterPackage, read_package, read_package_dir
from rostersync_assets.oneroster.validate import CHECKS, ValidationReport, validate_package
from rostersync_assets_tests.test_oneroster_reader import (
    SAMPLES,
    VALID_ROWS,
    edited_rows,
    package_files,
    table_bytes,
)


def validate(modes: Mapping[str, str] | None = None, **rows: list[dict[str, str]]) -> ValidationReport:
    """Validate the valid package with some files' rows replaced."""
    files = {entity: table_bytes(entity, entity_rows) for entity, entity_rows in rows.items()}
    return validate_package(read_package(package_files(modes, **files)))


def located(diagnostics: list[Diagnostic]) -> list[tuple[str, str, str | None, int | None, str | None, str | None]]:
    return [(d.severity, d.rule, d.file, d.line, d.column, d.value) for d in diagnostics]


def test_valid_package_is_accepted_whole() -> None:
    report = validate()

    assert report.accepted
    assert report.diagnostics == []
    for entity in spec.ENTITIES:
        pd.testing.assert_frame_equal(report.tables[entity], report.package.tables[entity])
        assert report.rejected_rows(entity) == 0
        assert all(report.findings(entity, check) == [] for check in CHECKS)


# --- value rules (pandera) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "index", "column", "value", "rule"),
    [
        ("courses", 0, "title", "", "value.required"),
        ("users", 1, "givenName", "  ", "value.required"),
        ("users", 1, "role", "pupil", "value.enum"),
        ("classes", 0, "classType", "lecture", "value.enum"),
        ("enrollments", 1, "role", "parent", "value.enum"),
        ("users", 2, "enabledUser", "maybe", "value.boolean"),
        ("enrollments", 0, "primary", "yes", "value.boolean"),
        ("academicSessions", 1, "startDate", "2023-02-29", "value.date"),
        ("academicSessions", 1, "endDate", "2024-1-12", "value.date"),
        ("enrollments", 1, "beginDate", "2023/08/21", "value.date"),
        ("academicSessions", 0, "schoolYear", "23-24", "value.year"),
        ("orgs", 1, "sourcedId", "s 1", "value.guid"),
        ("courses", 0, "orgSourcedId", "s1,d1", "value.guid"),
        ("classes", 0, "termSourcedIds", "t1;t2", "value.guid"),
        ("users", 1, "orgSourcedIds", "s1,,d1", "value.guid"),
    ],
)
def test_value_rule_rejects_the_row(entity: str, index: int, column: str, value: str, rule: str) -> None:
    report = validate(**{entity: edited_rows(entity, index, **{column: value})})
    line = index + 2

    assert located(report.findings(entity, "schema")) == [
        ("error", rule, f"{entity}.csv", line, column, _shown(column, value))
    ]
    assert line not in report.tables[entity][LINE_COLUMN].tolist()
    assert len(report.tables[entity]) == len(VALID_ROWS[entity]) - 1
    assert report.rejected_rows(entity) == 1
    assert not report.has_fatal and entity in report.held_entities()  # one row of a tiny file is over 2 %


def _shown(column: str, value: str) -> str:
    return f"<masked: {len(value)} chars>" if column in spec.PERSONAL_COLUMNS else value


@pytest.mark.parametrize(
    ("entity", "index", "column", "value"),
    [
        ("demographics", 0, "birthDate", "2008-02-29"),
        ("users", 1, "orgSourcedIds", " s1 , d1 "),
        ("classes", 0, "termSourcedIds", "t1, t2"),
        ("users", 2, "sourcedId", "org/u3@district.example_1.2-3"),
        ("users", 1, "middleName", ""),
        ("enrollments", 0, "primary", ""),
    ],
)
def test_valid_edge_values_pass(entity: str, index: int, column: str, value: str) -> None:
    report = validate(**{entity: edited_rows(entity, index, **{column: value})})

    # Certain fixes (trimmed list items) and warnings (an id that looks like an e-mail) are allowed.
    assert [d for d in report.findings(entity, "schema") if d.severity in ("error", "fatal")] == []
    assert report.rejected_rows(entity) == 0


def test_one_error_per_failing_cell_in_line_order() -> None:
    rows = edited_rows("users", 2, role="pupil", enabledUser="no")
    rows[0]["username"] = ""

    report = validate(users=rows)

    assert [(d.line, d.column, d.rule) for d in report.findings("users", "schema")] == [
        (2, "username", "value.required"),
        (4, "enabledUser", "value.boolean"),
        (4, "role", "value.enum"),
    ]
    assert report.rejected_rows("users") == 2


def test_personal_values_never_appear_in_diagnostics() -> None:
    report = validate(demographics=edited_rows("demographics", 0, birthDate="2009-02-30"))

    (diagnostic,) = report.findings("demographics", "schema")
    assert diagnostic.value == "<masked: 10 chars>"
    assert "2009-02-30" not in diagnostic.describe()


def test_schema_for_reads_like_the_spec() -> None:
    for entity in spec.ENTITIES:
        assert list(schema_for(entity).columns) == [*spec.SPECS[entity].columns, LINE_COLUMN, spec.FILE_COLUMN]
        # Only tables converted from several files (Clever) carry the row's file.
        assert not schema_for(entity).columns[spec.FILE_COLUMN].required
    users = schema_for("users").columns
    assert [check.name for check in users["role"].checks] == ["value.required", "value.enum"]
    assert [check.name for check in users["orgSourcedIds"].checks] == ["value.required", "value.guid"]
    assert [check.name for check in users["email"].checks] == []
    assert [check.name for check in schema_for("academicSessions").columns["schoolYear"].checks] == [
        "value.required", "value.year"
    ]


def test_a_table_not_shaped_by_the_reader_is_a_bug_not_a_finding() -> None:
    table = read_package(package_files()).tables["orgs"].drop(columns="name")

    with pytest.raises(TypeError, match="reader's shape"):
        validate_table("orgs", table)


# --- unique sourcedIds ------------------------------------------------------------------------------


def test_every_copy_of_a_duplicate_sourced_id_is_rejected() -> None:
    rows = edited_rows("users", 2, sourcedId="u1")

    report = validate(users=rows)

    assert located(report.findings("users", "unique_sourced_ids")) == [
        ("error", "unique.sourced_id", "users.csv", 2, "sourcedId", "u1"),
        ("error", "unique.sourced_id", "users.csv", 4, "sourcedId", "u1"),
    ]
    assert report.tables["users"]["sourcedId"].tolist() == ["u2"]
    assert report.rejected_rows("users") == 2


# --- references -------------------------------------------------------------------------------------


def test_missing_required_reference_rejects_the_row() -> None:
    report = validate(enrollments=edited_rows("enrollments", 1, userSourcedId="ghost"))

    assert located(report.findings("enrollments", "references")) == [
        ("error", "reference.missing", "enrollments.csv", 3, "userSourcedId", "ghost")
    ]
    assert report.tables["enrollments"]["sourcedId"].tolist() == ["e1"]


def test_list_references_are_split_and_trimmed() -> None:
    report = validate(users=edited_rows("users", 1, orgSourcedIds=" s1 , nowhere "))

    assert located(report.findings("users", "references")) == [
        ("error", "reference.missing", "users.csv", 3, "orgSourcedIds", "nowhere")
    ]


def test_missing_optional_reference_is_a_warning_and_keeps_the_row() -> None:
    report = validate(orgs=edited_rows("orgs", 1, parentSourcedId="state-1"))

    assert located(report.findings("orgs", "references")) == [
        ("warning", "reference.missing", "orgs.csv", 3, "parentSourcedId", "state-1")
    ]
    assert len(report.tables["orgs"]) == 2
    assert report.rejected_rows("orgs") == 0


def test_a_rejected_parent_rejects_its_dependants() -> None:
    report = validate(users=edited_rows("users", 0, role="pupil"))

    assert located(report.findings("enrollments", "references")) == [
        ("error", "reference.rejected", "enrollments.csv", 2, "userSourcedId", "u1")
    ]
    assert report.tables["enrollments"]["sourcedId"].tolist() == ["e2"]
    # Optional references to the rejected user (none here) and other files are unaffected.
    assert report.findings("users", "references") == []


def test_reference_to_an_absent_file_is_unchecked_once_per_column() -> None:
    two_classes = [VALID_ROWS["classes"][0], {**VALID_ROWS["classes"][0], "sourcedId": "k2"}]

    report = validate(modes={"courses": "absent"}, classes=two_classes)

    assert located(report.findings("classes", "references")) == [
        ("warning", "reference.unchecked", "classes.csv", None, "courseSourcedId", None)
    ]
    assert len(report.tables["classes"]) == 2
    assert report.accepted


def test_optional_reference_to_an_absent_file_is_not_reported() -> None:
    report = validate(modes={"academicSessions": "absent", "classes": "absent", "enrollments": "absent"})

    assert report.findings("courses", "references") == []


def test_delta_rows_are_not_reference_checked_and_delta_targets_are_unchecked() -> None:
    report = validate(
        modes={"enrollments": "delta", "classes": "delta"},
        enrollments=edited_rows("enrollments", 1, userSourcedId="ghost"),
    )

    assert report.findings("enrollments", "references") == []
    assert "courseSourcedId" not in {d.column for d in report.findings("classes", "references")}
    assert report.accepted


def test_bulk_file_referencing_a_delta_file_is_unchecked() -> None:
    report = validate(modes={"classes": "delta"})

    assert [(d.rule, d.column) for d in report.findings("enrollments", "references")] == [
        ("reference.unchecked", "classSourcedId")
    ]


# --- the report ------------------------------------------------------------------------------------


def test_fatal_diagnostics_make_the_package_unaccepted() -> None:
    files = package_files()
    del files["users.csv"]

    report = validate_package(read_package(files))

    assert not report.accepted
    assert [d.rule for d in report.findings("users", "schema")] == ["manifest.file_missing"]
    assert "users" not in report.tables


def test_findings_refuses_unknown_checks() -> None:
    with pytest.raises(ValueError, match="unknown check"):
        validate().findings("users", "spelling")


# --- real samples -----------------------------------------------------------------------------------


LEGACY = DistrictProfile(legacy_v1_0=True)


@pytest.mark.parametrize(
    ("sample", "profile", "accepted", "found", "accepted_rows"),
    [
        (
            "edfi-lms-toolkit/or11",
            STRICT,
            True,
            {("fixed", "row.trailing_empty_cells"): 1},
            {"orgs": 2, "academicSessions": 3, "courses": 2, "classes": 2, "users": 10, "demographics": 8,
             "enrollments": 24},
        ),
        (
            # OneRoster 1.0: no manifest. Read only when the district's profile says so.
            "edfi-lms-toolkit/or10",
            STRICT,
            False,
            {("fatal", "manifest.missing"): 1},
            {},
        ),
        (
            "edfi-lms-toolkit/or10",
            LEGACY,
            True,
            {("fixed", "fix.boolean_case"): 8, ("fixed", "fix.enum_case"): 1, ("fixed", "fix.grade"): 2,
             ("fixed", "fix.header_case"): 1, ("fixed", "version.converted"): 6,
             ("warning", "semantic.enrollment_duplicate"): 12, ("warning", "semantic.primary_teacher_count"): 4},
            {"orgs": 2, "academicSessions": 3, "courses": 2, "classes": 2, "users": 10, "demographics": 8,
             "enrollments": 12},
        ),
        (
            # A 1.1 manifest over 1.0-style headers: diagnosed as such, file by file.
            "oat-oneroster-import/OneRosterv1p1BaseCSV",
            STRICT,
            False,
            {("fatal", "file.header_version_mismatch"): 6, ("fixed", "fix.header_case"): 1,
             ("warning", "file.header_order"): 1, ("warning", "file.header_unknown_column"): 1,
             ("warning", "row.bulk_lifecycle_filled"): 1},
            {"orgs": 2},
        ),
        (
            # Certain fixes (TRUE, Scheduled, inactive) are made; the classes' school is a district org
            # (R7), so classes and their enrollments are rejected: far over the 2 % share.
            "moodle-enrol-oneroster/Test_full_data_set",
            STRICT,
            False,
            {("error", "reference.missing"): 3, ("error", "reference.rejected"): 3,
             ("error", "semantic.class_school_type"): 1, ("fixed", "fix.boolean_case"): 1,
             ("fixed", "fix.datetime"): 2, ("fixed", "fix.enum_case"): 1, ("fixed", "fix.status_alias"): 1,
             ("fixed", "fix.whitespace"): 2, ("warning", "reference.missing"): 3,
             ("warning", "reference.unchecked"): 1, ("warning", "row.bulk_lifecycle_filled"): 5,
             ("warning", "row.bulk_tobedeleted"): 3, ("warning", "semantic.agent_is_teacher"): 4,
             ("warning", "semantic.agent_not_reciprocal"): 1, ("warning", "semantic.session_parent_type"): 1,
             ("warning", "semantic.subject_codes_count"): 1},
            {"orgs": 1, "academicSessions": 3, "classes": 0, "users": 6, "enrollments": 0},
        ),
        (
            "moodle-enrol-oneroster/Test_minimal_data_set",
            STRICT,
            False,
            {("error", "reference.rejected"): 6, ("error", "semantic.class_school_type"): 2,
             ("fixed", "fix.boolean_case"): 1, ("fixed", "fix.enum_case"): 1, ("warning", "reference.unchecked"): 1},
            {"orgs": 1, "academicSessions": 5, "classes": 0, "users": 6, "enrollments": 0},
        ),
        (
            # OneRoster 1.2: roles.csv folded into the canonical users table.
            "moodle-enrol-oneroster/oneroster_test_data",
            STRICT,
            True,
            {("fixed", "fix.boolean_case"): 1, ("fixed", "version.converted"): 1},
            {"orgs": 1, "academicSessions": 1, "courses": 1, "classes": 1, "users": 1, "demographics": 1,
             "enrollments": 1},
        ),
        (
            "lepo-roster-hub/en",
            STRICT,
            True,
            {("warning", "manifest.property_unknown"): 1, ("warning", "manifest.entry_missing"): 1},
            {"orgs": 1, "academicSessions": 4, "courses": 2, "classes": 5, "users": 20, "enrollments": 30},
        ),
    ],
)
def test_real_samples(
    sample: str,
    profile: DistrictProfile,
    accepted: bool,
    found: dict[tuple[str, str], int],
    accepted_rows: dict[str, int],
) -> None:
    report = validate_package(read_package_dir(SAMPLES / sample, profile), profile=profile)

    assert report.accepted is accepted
    assert Counter((d.severity, d.rule) for d in report.diagnostics) == found
    assert {entity: len(table) for entity, table in report.tables.items()} == accepted_rows
    users_csv = next((SAMPLES / sample).glob("users.csv"), None)
    if users_csv is not None:
        assert _personal_values(users_csv).isdisjoint(_words(report))


def test_edfi_sample_quirks_are_read_faithfully() -> None:
    report = validate_package(read_package_dir(SAMPLES / "edfi-lms-toolkit/or11"))

    (trimmed,) = report.diagnostics
    assert (trimmed.file, trimmed.line) == ("users.csv", 10)
    assert report.tables["courses"]["sourcedId"].tolist() == ["03100500", "ENG-1"]
    assert set(report.tables["users"]["grades"]) == {"09", ""}
    assert list(report.tables["orgs"].columns) == [*spec.SPECS["orgs"].columns, LINE_COLUMN]


def test_moodle_full_sample_findings_name_each_cell() -> None:
    report = validate_package(read_package_dir(SAMPLES / "moodle-enrol-oneroster/Test_full_data_set"))

    fixed = [d for d in report.findings("classes", "schema") if d.rule == "fix.enum_case"]
    assert located(fixed) == [("fixed", "fix.enum_case", "classes.csv", 2, "classType", "Scheduled")]
    assert {d.value for d in report.findings("users", "schema") if d.rule == "fix.boolean_case"} == {"TRUE"}
    assert sorted((d.severity, d.rule, d.column) for d in report.findings("classes", "references")) == [
        ("error", "semantic.class_school_type", "schoolSourcedId"),
        ("warning", "reference.unchecked", "courseSourcedId"),
        ("warning", "semantic.subject_codes_count", "subjectCodes"),
    ]
    assert report.rejected_rows("enrollments") == 6


def _personal_values(users_csv: Path) -> set[str]:
    """Every personal value of a sample's users.csv, whole and word by word (short tokens excluded)."""
    with users_csv.open(encoding="utf-8-sig", newline="") as file:
        values = [value for row in csv.DictReader(file) for column, value in row.items()
                  if column in spec.PERSONAL_COLUMNS]
    return {token for value in values for token in (value, *value.split()) if len(token) >= 4}


def _words(report: ValidationReport) -> set[str]:
    """Everything a diagnostic shows, as whole texts, values and words."""
    texts = [d.describe() for d in report.diagnostics]
    texts += [str(value) for d in report.diagnostics for value in d.to_dict().values()]
    return {token for text in texts for token in (text, *text.replace("'", " ").split())}


# --- speed ------------------------------------------------------------------------------------------


def _generated_district(users: int, enrollments: int, classes: int) -> RosterPackage:
    """A clean generated district built directly as tables (the reader is timed separately)."""
    def table(entity: str, n: int, **columns: object) -> pd.DataFrame:
        data = {column: pd.Series(np.broadcast_to(np.asarray(columns.get(column, ""), dtype=object), n), dtype="str")
                for column in spec.SPECS[entity].columns}
        return pd.DataFrame({**data, LINE_COLUMN: np.arange(2, n + 2)})

    def ids(prefix: str, numbers: np.ndarray) -> np.ndarray:
        return np.char.add(prefix, numbers.astype(str)).astype(object)

    user_ids, seq = ids("u", np.arange(users)), np.arange(enrollments)
    tables = {
        "orgs": table("orgs", 1, sourcedId="s1", name="School", type="school"),
        "academicSessions": table("academicSessions", 1, sourcedId="t1", title="Term", type="term",
                                  startDate="2024-01-08", endDate="2024-06-14", schoolYear="2024"),
        "courses": table("courses", 1, sourcedId="c1", title="Course", orgSourcedId="s1"),
        "classes": table("classes", classes, sourcedId=ids("k", np.arange(classes)), title="Class",
                         courseSourcedId="c1", classType="scheduled", schoolSourcedId="s1", termSourcedIds="t1"),
        "users": table("users", users, sourcedId=user_ids, enabledUser="true", orgSourcedIds="s1", role="student",
                       username=user_ids, givenName="Given", familyName="Family"),
        "demographics": table("demographics", users, sourcedId=user_ids, birthDate="2010-05-04", sex="female"),
        "enrollments": table("enrollments", enrollments, sourcedId=ids("e", seq),
                             classSourcedId=ids("k", seq % classes), schoolSourcedId="s1",
                             userSourcedId=user_ids[seq // (enrollments // users)], role="student", beginDate="2024-01-08"),
    }
    return RosterPackage("1.1", dict.fromkeys(spec.ENTITIES, "bulk"), tables, [])


def test_a_large_district_validates_in_seconds() -> None:
    package = _generated_district(users=100_000, enrollments=1_000_000, classes=5_000)

    started = time.perf_counter()
    report = validate_package(package)
    elapsed = time.perf_counter() - started

    assert report.accepted and report.diagnostics == []
    assert len(report.tables["enrollments"]) == 1_000_000
    assert elapsed < 15, f"validation took {elapsed:.1f}s"


# --- the fast checks decide exactly like the plain rules --------------------------------------------

# Values where a shortcut could go wrong: blanks of every kind (Unicode spaces too), the 255-character
# limit, characters outside GUID syntax, case, impossible dates, extension tokens, repeated values.
TRICKY_VALUES = [
    "", " ", "\t", "\u00a0", "\u2003 ", "\x0b", "\x1c", "\u200b", "a", " a", "a ", "a b", "x" * 255, "x" * 256,
    "é", "ok/@.-_", "t1,t2", " t1 , t2 ", "t1,,t2", "teacher", "Teacher", "true", "TRUE", "false", "ext:custom",
    "ext:", "2024-02-29", "2023-02-29", "2024-13-01", "24-01-01", "2024", "202", "x" * 255,
]


def _plain_rule(name: str, values: pd.Series, file_spec: spec.FileSpec, column: str) -> pd.Series:
    """The rules as first written: `strip() == ""` blanks, one regex or lookup per row."""
    blank = values.str.strip() == ""
    lists = {reference.column for reference in file_spec.references if reference.is_list}
    if name == "value.required":
        return ~blank
    if name == "value.guid":
        return blank | values.str.fullmatch(models.GUID_LIST_PATTERN if column in lists else models.GUID_PATTERN)
    if name in ("value.enum", "value.boolean"):
        allowed = file_spec.enums.get(column, frozenset({"true", "false"}))
        extension = values.str.fullmatch(models.EXT_TOKEN_PATTERN) & (column in file_spec.extensible)
        return blank | values.isin(allowed) | extension
    if name == "value.year":
        return blank | values.str.fullmatch(models.YEAR_PATTERN)
    well_formed = values.where(values.str.fullmatch(models.DATE_PATTERN))
    return blank | pd.to_datetime(well_formed, format="%Y-%m-%d", errors="coerce").notna()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("entity", spec.ENTITIES)
def test_fast_value_checks_decide_like_the_plain_rules(entity: str, version: str) -> None:
    file_spec = spec.canonical_spec(entity, version)
    # The second set has only GUID characters, where the GUID check decides by length alone.
    for given in (TRICKY_VALUES * 3, ["a", "x" * 255, "x" * 256, "ok/@.-_", "A9", "", "x" * 256]):
        values = pd.Series(given, dtype="str")
        for column, schema_column in schema_for(entity, version).columns.items():
            for check in schema_column.checks:
                fast = check._check_fn(values).to_numpy(dtype=bool)
                plain = _plain_rule(check.name, values, file_spec, column).to_numpy(dtype=bool)
                assert fast.tolist() == plain.tolist(), (entity, column, check.name)
