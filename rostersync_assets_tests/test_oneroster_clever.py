"""Converting Clever's legacy SFTP format into OneRoster 1.1 tables (clever.py).

The Clever sandbox sample proves the whole conversion end to end (validated like any OneRoster
package); small inline deliveries built by `_delivery` show one mapping decision each.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pytest

from rostersync_assets.oneroster import spec
from rostersync_assets.oneroster.clever import (
    CLEVER_FILES,
    DISTRICT_ID,
    is_clever_package,
    read_clever_package,
)
from rostersync_assets.oneroster.diagnostics import Diagnostic
from rostersync_assets.oneroster.profile import DistrictProfile
from rostersync_assets.oneroster.reader import LINE_COLUMN, RosterPackage
from rostersync_assets.oneroster.spec import FILE_COLUMN
from rostersync_assets.oneroster.validate import ValidationReport, validate_package

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "oneroster-samples" / "clever-sandbox"

# A tiny district: one school, one term, one section with two teachers, one student enrolled.
BASE_ROWS: dict[str, list[dict[str, str]]] = {
    "schools.csv": [{"School_id": "007", "School_name": "Bayside High", "Nces_id": "360008000000"}],
    "students.csv": [
        {"School_id": "007", "Student_id": "00042", "Student_number": "S42", "State_id": "9001",
         "Last_name": "Quill", "Middle_name": "Q", "First_name": "Peregrine", "Gender": "F", "Dob": "5/13/2009",
         "Grade": "9", "Race": "B", "Hispanic_Latino": "N", "Student_email": "pquill@example.org",
         "Username": "pquill", "Password": "hunter2secret"},
    ],
    "teachers.csv": [
        {"School_id": "007", "Teacher_id": "T1", "Last_name": "Marlowe", "First_name": "Octavia",
         "Teacher_email": "omarlowe@example.org", "Username": "", "Password": "s3cretTeach"},
        {"School_id": "007", "Teacher_id": "T2", "Last_name": "Penrose", "First_name": "Barnaby",
         "Teacher_email": "bpenrose@example.org", "Username": "bpenrose", "Password": "s3cretToo"},
    ],
    "sections.csv": [
        {"School_id": "007", "Section_id": "0100", "Teacher_id": "T1", "Teacher_2_id": "T2", "Name": "Algebra - P1",
         "Grade": "9", "Course_name": "Algebra I", "Course_number": "MA1", "Period": "1", "Term_name": "Fall",
         "Term_start": "8/21/2023", "Term_end": "1/12/2024"},
    ],
    "enrollments.csv": [{"School_id": "007", "Student_id": "00042", "Section_id": "0100"}],
}


def _csv(rows: list[dict[str, str]], header: list[str] | None = None, newline: str = "\n") -> bytes:
    """CSV bytes with the given line terminator; the header defaults to the first row's keys."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header or list(rows[0]), lineterminator=newline, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _delivery(newline: str = "\n", **changes: list[dict[str, str]]) -> dict[str, bytes]:
    """BASE_ROWS as files, with whole files replaced by keyword (`sections=[...]`)."""
    rows = BASE_ROWS | {f"{name}.csv": value for name, value in changes.items()}
    return {name: _csv(file_rows, newline=newline) for name, file_rows in rows.items()}


def _with(file_name: str, **values: str) -> list[dict[str, str]]:
    """BASE_ROWS[file_name] with its (single) first row changed."""
    return [BASE_ROWS[file_name][0] | values, *BASE_ROWS[file_name][1:]]


# The fixtures write M/D/YYYY dates, as Clever exports do; a district confirms that in its profile.
MDY = DistrictProfile(date_format="%m/%d/%Y")


def _read_mdy(files: dict[str, bytes]) -> RosterPackage:
    return read_clever_package(files, MDY)


def _rules(diagnostics: list[Diagnostic]) -> set[str]:
    return {d.rule for d in diagnostics}


def _only(diagnostics: list[Diagnostic], rule: str) -> Diagnostic:
    found = [d for d in diagnostics if d.rule == rule]
    assert len(found) == 1, found
    return found[0]


# --- the Clever sandbox sample -------------------------------------------------------------------


# What the district's admin confirms when onboarding the sandbox district: its export writes M/D/YY.
SAMPLE_PROFILE = DistrictProfile(date_format="%m/%d/%y")


@pytest.fixture(scope="module")
def sample() -> RosterPackage:
    return read_clever_package({path.name: path.read_bytes() for path in SAMPLE.glob("*.csv")}, SAMPLE_PROFILE)


@pytest.fixture(scope="module")
def sample_report(sample: RosterPackage) -> ValidationReport:
    return validate_package(sample)


def test_sample_converts_to_all_seven_bulk_tables(sample: RosterPackage) -> None:
    assert sample.version == "clever"
    assert sample.modes == dict.fromkeys(spec.ENTITIES, "bulk")
    counts = {entity: len(table) for entity, table in sample.tables.items()}
    # 3 schools + the district; Y1/S1/S2 under one school year; 460 teacher enrollments = 475 teacher
    # slots minus 15 where a section lists the same teacher twice.
    assert counts == {"orgs": 4, "academicSessions": 4, "courses": 347, "classes": 379, "users": 1093,
                      "demographics": 1004, "enrollments": 8971 + 460}
    for entity, table in sample.tables.items():
        assert list(table.columns) == [*spec.SPECS[entity].columns, LINE_COLUMN, FILE_COLUMN]
        assert table[LINE_COLUMN].dtype == "int64"
    # Each row names the Clever file its line belongs to; users and enrollments mix two files.
    sources = {entity: set(table[FILE_COLUMN]) for entity, table in sample.tables.items()}
    assert sources == {
        "orgs": {"schools.csv"}, "academicSessions": {"sections.csv"}, "courses": {"sections.csv"},
        "classes": {"sections.csv"}, "users": {"students.csv", "teachers.csv"}, "demographics": {"students.csv"},
        "enrollments": {"enrollments.csv", "sections.csv"},
    }
    first = sample.diagnostics[0]
    assert (first.rule, first.severity) == ("clever.converted", "warning")
    assert all(name.name in first.message for name in SAMPLE.glob("*.csv"))


def test_sample_validates_with_all_8971_enrollments_resolved(
    sample: RosterPackage, sample_report: ValidationReport
) -> None:
    report = sample_report
    assert report.accepted
    enrollments, tables = report.tables["enrollments"], sample.tables
    students = enrollments[enrollments["role"] == "student"]
    assert len(students) == 8971
    assert students["classSourcedId"].isin(tables["classes"]["sourcedId"]).all()
    assert students["userSourcedId"].isin(tables["users"]["sourcedId"]).all()
    assert students["schoolSourcedId"].isin(tables["orgs"]["sourcedId"]).all()
    assert len(enrollments) == len(sample.tables["enrollments"])
    # Every section names its primary teacher first, even where it lists that teacher again later.
    primaries = enrollments[enrollments["primary"] == "true"]
    assert len(primaries) == 379 and primaries["classSourcedId"].is_unique
    # The one row the sample gets wrong: a birth date of 02/29/2005 (no such day) rejects that
    # student's demographics record only, never the student.
    assert len(report.tables["users"]) == 1093 and len(report.tables["demographics"]) == 1003


def test_sample_rule_ids_are_pinned(sample_report: ValidationReport) -> None:
    report = sample_report
    assert _rules(report.diagnostics) == {
        "clever.converted", "fix.date_format", "fix.grade", "value.grade_unknown", "value.date",
    }
    # Grade 0 (the sandbox's kindergarten) is not certain to mean KG: kept and warned until the profile says so.
    unknown = [d for d in report.diagnostics if d.rule == "value.grade_unknown"]
    assert {(d.file, d.value) for d in unknown} == {("students.csv", "0"), ("sections.csv", "0")}


def test_sample_term_dates_read_with_the_confirmed_profile_format(sample: RosterPackage) -> None:
    sessions = sample.tables["academicSessions"]
    assert set(zip(sessions["startDate"], sessions["endDate"])) == {("2015-08-01", "2016-06-01")}
    assert sorted(sessions["title"]) == ["2015-2016", "S1", "S2", "Y1"]
    assert set(sessions.loc[sessions["type"] == "term", "parentSourcedId"]) == {"clever-schoolyear-2016"}
    assert (sessions["schoolYear"] == "2016").all()


def test_no_diagnostic_carries_a_personal_value_from_the_people_files(sample_report: ValidationReport) -> None:
    people = ["Last_name", "Middle_name", "First_name", "Dob", "Student_email", "Contact_name", "Contact_phone",
              "Contact_email", "Username", "Password", "Teacher_email"]
    personal: set[str] = set()
    for name in ("students.csv", "teachers.csv"):
        table = pd.read_csv(SAMPLE / name, dtype=str, keep_default_na=False)
        personal |= {value for column in people if column in table for value in table[column] if len(value) >= 4}
    text = " ".join(d.describe() for d in sample_report.diagnostics)
    assert not [value for value in personal if value in text]


def test_passwords_are_never_copied(sample: RosterPackage) -> None:
    assert (sample.tables["users"]["password"] == "").all()
    converted = _read_mdy(_delivery())
    assert (converted.tables["users"]["password"] == "").all()


# --- detection, files, headers, line endings -------------------------------------------------------


def test_is_clever_package_by_file_names_in_any_case() -> None:
    assert is_clever_package(["Schools.csv", "STUDENTS.CSV", "enrollments.csv"])
    assert is_clever_package(["sections.csv"])
    assert not is_clever_package(["manifest.csv", "users.csv", "enrollments.csv"])
    assert not is_clever_package(["manifest.csv", "students.csv"])
    assert not is_clever_package([])


def test_file_names_match_case_insensitively_and_are_reported() -> None:
    files = _delivery()
    files["Schools.csv"] = files.pop("schools.csv")
    package = _read_mdy(files)
    assert package.modes["orgs"] == "bulk"
    assert _only(package.diagnostics, "fix.file_name_case").file == "Schools.csv"


@pytest.mark.parametrize("missing", [clever.name for clever in CLEVER_FILES])
def test_a_missing_file_is_fatal_and_nothing_is_converted(missing: str) -> None:
    files = _delivery()
    del files[missing]
    package = _read_mdy(files)
    found = _only(package.diagnostics, "clever.file_missing")
    assert (found.severity, found.file) == ("fatal", missing)
    assert package.diagnostics[0].rule == "clever.converted"
    assert package.tables == {} and set(package.modes.values()) == {"absent"}
    assert not validate_package(package).accepted


def test_a_missing_required_column_names_file_and_column() -> None:
    sections = [{key: value for key, value in BASE_ROWS["sections.csv"][0].items() if key != "Course_name"}]
    package = _read_mdy(_delivery(sections=sections))
    found = _only(package.diagnostics, "file.header_missing_column")
    assert (found.severity, found.file, found.column) == ("fatal", "sections.csv", "Course_name")
    assert package.tables == {}


def test_optional_columns_may_be_missing_and_column_order_is_free() -> None:
    students = [{key: BASE_ROWS["students.csv"][0][key] for key in ("Last_name", "First_name", "Student_id",
                                                                      "School_id", "Username")}]
    package = _read_mdy(_delivery(students=students))
    user = package.tables["users"].iloc[0]
    assert (user["sourcedId"], user["givenName"], user["grades"]) == ("00042", "Peregrine", "")
    # Without Dob, Gender, Race or Hispanic_Latino there is nothing to put in demographics.
    assert "demographics" not in package.tables and package.modes["demographics"] == "absent"
    assert validate_package(package).accepted


@pytest.mark.parametrize("newline", ["\r", "\r\n", "\n"])
def test_cr_only_crlf_and_lf_line_endings_read_alike(newline: str) -> None:
    package = _read_mdy(_delivery(newline=newline))
    expected = _read_mdy(_delivery())
    for entity, table in expected.tables.items():
        pd.testing.assert_frame_equal(package.tables[entity], table)
    assert package.tables["enrollments"][LINE_COLUMN].tolist() == [2, 2, 2]


def test_empty_file_is_fatal() -> None:
    files = _delivery()
    files["enrollments.csv"] = b"School_id,Student_id,Section_id\n"
    package = _read_mdy(files)
    assert _only(package.diagnostics, "file.empty").severity == "fatal"
    assert package.tables == {}


def test_a_repeated_enrollment_row_is_an_exact_copy_for_validation_to_drop() -> None:
    enrollments = BASE_ROWS["enrollments.csv"] * 2
    table = _read_mdy(_delivery(enrollments=enrollments)).tables["enrollments"]
    students = table[table["role"] == "student"]
    assert students[LINE_COLUMN].tolist() == [2, 3]
    assert students.drop(columns=LINE_COLUMN).duplicated().tolist() == [False, True]


def test_ragged_row_is_rejected_by_the_reader_rules() -> None:
    files = _delivery()
    files["enrollments.csv"] += b"007,00042\n"
    package = _read_mdy(files)
    found = _only(package.diagnostics, "row.width")
    assert (found.file, found.line, found.severity) == ("enrollments.csv", 3, "error")
    assert len(package.tables["enrollments"]) == 3


# --- mapping decisions ---------------------------------------------------------------------------


def test_schools_become_school_orgs_under_one_synthetic_district() -> None:
    orgs = _read_mdy(_delivery()).tables["orgs"]
    assert orgs[["sourcedId", "type", "parentSourcedId"]].values.tolist() == [
        [DISTRICT_ID, "district", ""], ["007", "school", DISTRICT_ID]]
    assert orgs.loc[1, "identifier"] == "360008000000"


def test_terms_under_a_school_year_and_classes_point_at_their_term() -> None:
    tables = _read_mdy(_delivery()).tables
    sessions = tables["academicSessions"].set_index("type")
    assert sessions.loc["schoolYear", ["title", "startDate", "endDate", "schoolYear"]].tolist() == [
        "2023-2024", "2023-08-21", "2024-01-12", "2024"]
    assert sessions.loc["term", ["title", "parentSourcedId"]].tolist() == ["Fall", "clever-schoolyear-2024"]
    assert tables["classes"].loc[0, "termSourcedIds"] == sessions.loc["term", "sourcedId"]


def test_sections_without_a_term_go_to_the_synthetic_school_year_and_are_reported() -> None:
    sections = [BASE_ROWS["sections.csv"][0],
                BASE_ROWS["sections.csv"][0] | {"Section_id": "0101", "Term_name": "", "Term_start": "",
                                                "Term_end": ""}]
    package = _read_mdy(_delivery(sections=sections))
    classes = package.tables["classes"].set_index("sourcedId")
    assert classes.loc["0101", "termSourcedIds"] == "clever-schoolyear-2024"
    found = _only(package.diagnostics, "value.required")
    assert (found.severity, found.file, found.line) == ("warning", "sections.csv", 3)
    assert validate_package(package).accepted


def test_courses_are_deduplicated_per_school_number_and_name() -> None:
    section = BASE_ROWS["sections.csv"][0]
    sections = [section, section | {"Section_id": "0101"},
                section | {"Section_id": "0102", "Course_name": "Homeroom"}]
    tables = _read_mdy(_delivery(sections=sections)).tables
    courses = tables["courses"]
    assert sorted(courses["title"]) == ["Algebra I", "Homeroom"]
    assert set(courses["courseCode"]) == {"MA1"} and set(courses["orgSourcedId"]) == {"007"}
    assert courses[LINE_COLUMN].tolist() == [2, 4]
    course_of = tables["classes"].set_index("sourcedId")["courseSourcedId"]
    assert course_of["0100"] == course_of["0101"] != course_of["0102"]
    # Synthetic ids depend only on the defining values: stable across deliveries.
    assert _read_mdy(_delivery(sections=sections[::-1])).tables["courses"]["sourcedId"].isin(
        courses["sourcedId"]).all()


def test_sections_become_scheduled_classes() -> None:
    sections = [BASE_ROWS["sections.csv"][0],
                BASE_ROWS["sections.csv"][0] | {"Section_id": "0101", "Name": ""}]
    classes = _read_mdy(_delivery(sections=sections)).tables["classes"]
    first = classes.iloc[0]
    assert (first["sourcedId"], first["title"], first["grades"], first["classType"], first["periods"],
            first["schoolSourcedId"]) == ("0100", "Algebra - P1", "09", "scheduled", "1", "007")
    assert classes.iloc[1]["title"] == "Algebra I"


def test_students_and_teachers_become_users() -> None:
    users = _read_mdy(_delivery()).tables["users"].set_index("sourcedId")
    student, teacher = users.loc["00042"], users.loc["T1"]
    assert (student["role"], student["enabledUser"], student["orgSourcedIds"], student["username"],
            student["identifier"], student["userIds"], student["grades"]) == (
        "student", "true", "007", "pquill", "S42", "{StateId:9001}", "09")
    assert (teacher["role"], teacher["givenName"], teacher["familyName"]) == ("teacher", "Octavia", "Marlowe")
    # No Username: the e-mail address is the login.
    assert teacher["username"] == teacher["email"] == "omarlowe@example.org"


def test_demographics_from_the_student_file() -> None:
    students = [BASE_ROWS["students.csv"][0],
                BASE_ROWS["students.csv"][0] | {"Student_id": "00043", "Gender": "X", "Race": "", "Dob": "",
                                                "Hispanic_Latino": "y"}]
    package = _read_mdy(_delivery(students=students))
    demographics = package.tables["demographics"].set_index("sourcedId")
    first, second = demographics.loc["00042"], demographics.loc["00043"]
    assert (first["birthDate"], first["sex"], first["blackOrAfricanAmerican"], first["white"],
            first["hispanicOrLatinoEthnicity"]) == ("2009-05-13", "female", "true", "false", "false")
    assert (second["sex"], second["white"], second["hispanicOrLatinoEthnicity"]) == ("", "", "true")
    found = _only(package.diagnostics, "value.enum")
    assert (found.file, found.line, found.column, found.value) == ("students.csv", 3, "Gender", None)


def test_enrollments_for_students_and_every_listed_teacher() -> None:
    sections = [BASE_ROWS["sections.csv"][0] | {"Teacher_3_id": "T1"}]
    enrollments = _read_mdy(_delivery(sections=sections)).tables["enrollments"]
    assert enrollments[["sourcedId", "userSourcedId", "role", "primary", LINE_COLUMN]].values.tolist() == [
        ["0100-student-00042", "00042", "student", "", 2],
        ["0100-teacher-T1", "T1", "teacher", "true", 2],
        ["0100-teacher-T2", "T2", "teacher", "false", 2],
    ]


@pytest.mark.parametrize(
    ("delivered", "expected", "rule"),
    [("9", "09", "fix.grade"), ("K", "KG", "fix.grade"), ("Kindergarten", "KG", "fix.grade"),
     ("12", "12", None), ("KG", "KG", None), ("PreK", "PreK", "value.grade_unknown"),
     ("0", "0", "value.grade_unknown")],
)
def test_grades_are_normalised_to_ceds_or_kept_and_warned(delivered: str, expected: str, rule: str | None) -> None:
    package = _read_mdy(_delivery(students=_with("students.csv", Grade=delivered)))
    assert package.tables["users"].loc[0, "grades"] == expected
    found = [d for d in package.diagnostics if d.file == "students.csv" and d.column == "Grade"]
    assert [d.rule for d in found] == ([rule] if rule else [])


def test_profile_grade_map_comes_first() -> None:
    package = read_clever_package(_delivery(students=_with("students.csv", Grade="0")),
                                  DistrictProfile(grade_map={"0": "KG"}))
    assert package.tables["users"].loc[0, "grades"] == "KG"
    assert _only([d for d in package.diagnostics if d.file == "students.csv"], "fix.grade").value == "0"


# --- dates ---------------------------------------------------------------------------------------

_AMBIGUOUS = {"Term_start": "8/1/2023", "Term_end": "6/1/2024"}


def test_ambiguous_dates_without_evidence_are_errors_never_guesses() -> None:
    files = _delivery(sections=_with("sections.csv", **_AMBIGUOUS), students=_with("students.csv", Dob="4/2/2009"))
    package = read_clever_package(files)
    ambiguous = [d for d in package.diagnostics if d.rule == "value.date_ambiguous"]
    assert [(d.severity, d.file, d.line, d.column) for d in ambiguous] == [
        ("error", "sections.csv", 2, "Term_start"), ("error", "sections.csv", 2, "Term_end"),
        ("error", "students.csv", 2, "Dob")]
    assert ambiguous[2].value == "<masked: 8 chars>"
    report = validate_package(package)
    # The term cannot be built, so its class and the class's enrollments are rejected too.
    assert report.tables["classes"].empty and report.tables["enrollments"].empty
    assert len(report.tables["users"]) == 3


def test_profile_date_format_converts_ambiguous_dates() -> None:
    files = _delivery(sections=_with("sections.csv", **_AMBIGUOUS), students=_with("students.csv", Dob="4/2/09"))
    package = read_clever_package(files, DistrictProfile(date_format="%m/%d/%Y"))
    term = package.tables["academicSessions"].set_index("type").loc["term"]
    assert (term["startDate"], term["endDate"]) == ("2023-08-01", "2024-06-01")
    # 4/2/09 does not match the profile's four-digit year: an error, not a guess.
    assert _only(package.diagnostics, "value.date").file == "students.csv"


def test_without_a_profile_format_no_date_is_guessed_even_when_others_would_prove_the_order() -> None:
    # 4/22/09 can only be month-first, yet that says nothing certain about 8/1/2023 in another file.
    files = _delivery(sections=_with("sections.csv", **_AMBIGUOUS), students=_with("students.csv", Dob="4/22/09"))
    package = read_clever_package(files)
    assert {d.column for d in package.diagnostics if d.rule == "value.date_ambiguous"} >= {"Term_start", "Dob"}
    assert "fix.date_format" not in _rules(package.diagnostics)


def test_the_sample_without_a_profile_rejects_its_terms_rather_than_guess() -> None:
    package = read_clever_package({path.name: path.read_bytes() for path in SAMPLE.glob("*.csv")})
    assert "value.date_ambiguous" in _rules(package.diagnostics)
    assert not validate_package(package).tables["enrollments"].shape[0]


def test_iso_dates_pass_unchanged() -> None:
    package = read_clever_package(_delivery(sections=_with("sections.csv", Term_start="2023-08-21",
                                                           Term_end="2024-01-12")))
    assert not [d for d in package.diagnostics if d.column in ("Term_start", "Term_end")]
    assert "fix.date_format" not in _rules(package.diagnostics)


# --- rows are named by file and line -------------------------------------------------------------


def test_a_rejected_row_of_one_file_leaves_the_same_line_of_the_other_file_alone() -> None:
    # Line 2 of teachers.csv names a school that does not exist; line 2 of students.csv (the same users
    # table) and line 2 of enrollments.csv (the same enrollments table as sections.csv's teacher rows)
    # are fine and must stay.
    teachers = [BASE_ROWS["teachers.csv"][0] | {"School_id": "999"}, *BASE_ROWS["teachers.csv"][1:]]
    report = validate_package(_read_mdy(_delivery(teachers=teachers)))
    missing = _only(report.diagnostics, "reference.missing")
    assert (missing.severity, missing.file, missing.line, missing.column, missing.value) == (
        "error", "teachers.csv", 2, "orgSourcedIds", "999")
    assert report.tables["users"]["sourcedId"].tolist() == ["00042", "T2"]
    assert report.rejected_rows("users") == 1
    # T1's teacher enrollment comes from line 2 of sections.csv: rejected with its teacher, and with it
    # the co-teacher's enrollment from the same sections.csv row (the row is the unit of quarantine).
    rejected = _only(report.diagnostics, "reference.rejected")
    assert (rejected.file, rejected.line, rejected.column, rejected.value) == (
        "sections.csv", 2, "userSourcedId", "T1")
    enrollments = report.tables["enrollments"]
    assert enrollments[["sourcedId", FILE_COLUMN, LINE_COLUMN]].values.tolist() == [
        ["0100-student-00042", "enrollments.csv", 2]]
    assert report.rejected_rows("enrollments") == 1
    assert [d.rule for d in report.findings("users", "references")] == ["reference.missing"]
    assert [d.rule for d in report.findings("enrollments", "references")] == ["reference.rejected"]


def test_a_rejected_student_leaves_the_teacher_on_the_same_line_alone() -> None:
    students = [BASE_ROWS["students.csv"][0] | {"Student_id": "no spaces allowed"}]
    enrollments = [BASE_ROWS["enrollments.csv"][0] | {"Student_id": "no spaces allowed"}]
    report = validate_package(_read_mdy(_delivery(students=students, enrollments=enrollments)))
    guid = [d for d in report.diagnostics if d.rule == "value.guid"]
    assert {(d.file, d.line) for d in guid} == {("students.csv", 2), ("enrollments.csv", 2)}
    assert report.tables["users"]["sourcedId"].tolist() == ["T1", "T2"]
    assert sorted(report.tables["enrollments"]["userSourcedId"]) == ["T1", "T2"]
    assert report.rejected_rows("users") == 1 and report.rejected_rows("enrollments") == 1
