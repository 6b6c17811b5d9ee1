"""Normalisation: the certain fixes (and the refusals to guess) of REFERENCE §14, each one reported.

Catalogue cases are named `test_mNN_...` after REFERENCE §14. Every table is a small inline fixture of
the reader's shape (spec columns as `str`, blanks as "", plus `_line`); lines start at 2 (the header is 1).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import pytest

from rostersync_assets.oneroster import spec
from rostersync_assets.oneroster.diagnostics import Diagnostic
from rostersync_assets.oneroster.normalize import (
    FIRST_LINES_SHOWN,
    SPEC_EXAMPLE_DATETIME,
    normalize_header,
    normalize_table,
)
from rostersync_assets.oneroster.profile import STRICT, DistrictProfile
from rostersync_assets.oneroster.spec import LINE_COLUMN


def table(entity: str, *rows: Mapping[str, str]) -> pd.DataFrame:
    """A reader-shaped table of `entity`; columns a row does not name are blank."""
    columns = spec.SPECS[entity].columns
    cells = [[row.get(column, "") for column in columns] for row in rows]
    frame = pd.DataFrame(cells, columns=list(columns), dtype="str")
    frame[LINE_COLUMN] = pd.Series(range(2, len(rows) + 2), dtype="int64")
    return frame


def normalized(
    entity: str, rows: list[Mapping[str, str]], profile: DistrictProfile = STRICT
) -> tuple[pd.DataFrame, list[Diagnostic]]:
    return normalize_table(entity, f"{entity}.csv", table(entity, *rows), profile)


def column_of(
    entity: str, column: str, values: list[str], profile: DistrictProfile = STRICT
) -> tuple[list[str], list[Diagnostic]]:
    """Normalise one column given as values (one row each); the fixed values and the findings."""
    fixed, diagnostics = normalized(entity, [{column: value} for value in values], profile)
    return fixed[column].tolist(), diagnostics


def only(diagnostics: list[Diagnostic], rule: str, column: str | None = None) -> Diagnostic:
    """The single diagnostic of a rule (and column): findings are aggregated per rule and column."""
    found = [d for d in diagnostics if d.rule == rule and (column is None or d.column == column)]
    assert len(found) == 1, found
    return found[0]


def assert_finding(
    diagnostic: Diagnostic, severity: str, file: str, line: int, column: str, value: str | None, rows: int
) -> None:
    assert (diagnostic.severity, diagnostic.file, diagnostic.line, diagnostic.column, diagnostic.value) == (
        severity, file, line, column, value,
    )
    assert f"{rows} row(s)" in diagnostic.message


# --- contract -------------------------------------------------------------------------------------


def test_a_clean_table_is_returned_unchanged_without_findings():
    rows = [{"sourcedId": "e1", "classSourcedId": "k1", "schoolSourcedId": "s1", "userSourcedId": "u1",
             "role": "teacher", "primary": "true", "beginDate": "2023-08-21", "endDate": "2024-06-07",
             "status": "active", "dateLastModified": "2024-01-02T03:04:05.000Z"}]
    original = table("enrollments", *rows)
    fixed, diagnostics = normalize_table("enrollments", "enrollments.csv", original, STRICT)
    assert diagnostics == []
    pd.testing.assert_frame_equal(fixed, original)


def test_the_input_table_is_not_modified_and_the_shape_is_kept():
    original = table("users", {"sourcedId": " u1 ", "enabledUser": "TRUE", "role": "Student"})
    before = original.copy()
    fixed, _ = normalize_table("users", "users.csv", original, STRICT)
    pd.testing.assert_frame_equal(original, before)
    assert list(fixed.columns) == list(original.columns)
    assert (fixed.dtypes == original.dtypes).all()
    assert fixed[["sourcedId", "enabledUser", "role"]].iloc[0].tolist() == ["u1", "true", "student"]


def test_an_empty_table_normalises_to_an_empty_table():
    fixed, diagnostics = normalize_table("users", "users.csv", table("users"), STRICT)
    assert fixed.empty and list(fixed.columns) == [*spec.USERS.columns, LINE_COLUMN]
    assert diagnostics == []


def test_a_million_identical_fixes_are_one_diagnostic_with_a_count_and_the_first_lines():
    rows = 5_000
    fixed, diagnostics = column_of("enrollments", "role", ["Student"] * rows)
    assert set(fixed) == {"student"}
    finding = only(diagnostics, "fix.enum_case")
    assert_finding(finding, "fixed", "enrollments.csv", 2, "role", "Student", rows)
    shown = ", ".join(str(line) for line in range(2, 2 + FIRST_LINES_SHOWN))
    assert f"line(s) {shown}, ..." in finding.message


def test_the_first_lines_are_the_smallest_even_when_rows_are_not_in_line_order():
    frame = table("enrollments", *({"role": "Teacher"} for _ in range(20)))
    frame[LINE_COLUMN] = list(range(40, 20, -1))
    finding = only(normalize_table("enrollments", "enrollments.csv", frame, STRICT)[1], "fix.enum_case")
    assert finding.line == 21
    assert "line(s) 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, ..." in finding.message


def test_fixes_in_a_personal_column_are_reported_with_the_value_masked():
    fixed, diagnostics = column_of("users", "userIds", [" {LDAP:12} , {LTI:15}"])
    assert fixed == ["{LDAP:12},{LTI:15}"]
    assert_finding(only(diagnostics, "fix.whitespace"), "fixed", "users.csv", 2, "userIds", "<masked: 21 chars>", 1)


# --- header ---------------------------------------------------------------------------------------


def test_header_case_is_fixed_for_spec_columns_only():
    header = ["SourcedId", "status", "DATELASTMODIFIED", "metadata.Extra"]
    renamed, diagnostics = normalize_header("orgs.csv", header, STRICT)
    assert renamed == ["sourcedId", "status", "dateLastModified", "metadata.Extra"]
    assert [(d.severity, d.rule, d.file, d.line, d.column) for d in diagnostics] == [
        ("fixed", "fix.header_case", "orgs.csv", 1, "sourcedId"),
        ("fixed", "fix.header_case", "orgs.csv", 1, "dateLastModified"),
    ]
    assert "'SourcedId'" in diagnostics[0].message


def test_header_typos_are_not_guessed_without_an_alias():
    header = ["sourcedId", "status", "dataLastModified", "prefferedGivenName"]
    assert normalize_header("users.csv", header, STRICT) == (header, [])


def test_header_aliases_come_from_the_profile_for_that_file():
    profile = DistrictProfile.from_mapping({"header_aliases": {"users.csv": {"dataLastModified": "dateLastModified"}}})
    renamed, diagnostics = normalize_header("users.csv", ["sourcedId", "dataLastModified"], profile)
    assert renamed == ["sourcedId", "dateLastModified"]
    finding = only(diagnostics, "fix.header_alias")
    location = (finding.severity, finding.file, finding.line, finding.column)
    assert location == ("fixed", "users.csv", 1, "dateLastModified")
    # The alias is for users.csv only.
    assert normalize_header("orgs.csv", ["sourcedId", "dataLastModified"], profile)[0][1] == "dataLastModified"


def test_a_header_is_never_renamed_onto_a_column_already_present():
    profile = DistrictProfile.from_mapping({"header_aliases": {"users.csv": {"uid": "sourcedId"}}})
    header = ["sourcedId", "SourcedId", "uid", "Role", "ROLE"]
    renamed, diagnostics = normalize_header("users.csv", header, profile)
    assert renamed == ["sourcedId", "SourcedId", "uid", "role", "ROLE"]
    assert [d.column for d in diagnostics] == ["role"]


def test_headers_of_files_rostersync_does_not_read_are_left_alone():
    assert normalize_header("resources.csv", ["SourcedId"], STRICT) == (["SourcedId"], [])


# --- catalogue ------------------------------------------------------------------------------------


def test_m16_status_drift_is_case_folded_and_legacy_statuses_read_as_tobedeleted():
    values = ["Active", "toBeDeleted", "inactive", "Deleted", "active", "gone"]
    fixed, diagnostics = column_of("users", "status", values)
    assert fixed == ["active", "tobedeleted", "tobedeleted", "tobedeleted", "active", "gone"]
    assert_finding(only(diagnostics, "fix.enum_case"), "fixed", "users.csv", 2, "status", "Active", 2)
    assert_finding(only(diagnostics, "fix.status_alias"), "fixed", "users.csv", 4, "status", "inactive", 2)


def test_m16_status_aliases_from_the_profile():
    profile = DistrictProfile.from_mapping({"enum_aliases": {"status": {"A": "active"}}})
    fixed, diagnostics = column_of("users", "status", ["A", "a"], profile)
    assert fixed == ["active", "a"]
    assert_finding(only(diagnostics, "fix.enum_alias"), "fixed", "users.csv", 2, "status", "A", 1)


def test_m17_boolean_case_is_fixed():
    fixed, diagnostics = column_of("users", "enabledUser", ["TRUE", "True", "FALSE", "false", "true"])
    assert fixed == ["true", "true", "false", "false", "true"]
    assert_finding(only(diagnostics, "fix.boolean_case"), "fixed", "users.csv", 2, "enabledUser", "TRUE", 3)


def test_m17_boolean_tokens_are_left_for_the_validator_without_a_profile():
    fixed, diagnostics = column_of("enrollments", "primary", ["1", "0", "Y", "N", "yes", "no"])
    assert fixed == ["1", "0", "Y", "N", "yes", "no"]
    assert diagnostics == []


def test_m17_boolean_aliases_from_the_profile_then_case():
    profile = DistrictProfile.from_mapping({"boolean_aliases": {"Y": "true", "N": "false"}})
    fixed, diagnostics = column_of("demographics", "white", ["Y", "N", "y", "TRUE"], profile)
    assert fixed == ["true", "false", "y", "true"]
    assert_finding(only(diagnostics, "fix.boolean_alias"), "fixed", "demographics.csv", 2, "white", "Y", 2)
    assert_finding(only(diagnostics, "fix.boolean_case"), "fixed", "demographics.csv", 5, "white", "TRUE", 1)


def test_m18_enum_case_is_fixed_to_the_canonical_value():
    fixed, diagnostics = column_of("classes", "classType", ["Scheduled", "HOMEROOM", "scheduled", "lab"])
    assert fixed == ["scheduled", "homeroom", "scheduled", "lab"]
    assert_finding(only(diagnostics, "fix.enum_case"), "fixed", "classes.csv", 2, "classType", "Scheduled", 2)
    sexes, _ = column_of("demographics", "sex", ["Female", "MALE"])
    roles, _ = column_of("enrollments", "role", ["Teacher"])
    session_types, _ = column_of("academicSessions", "type", ["gradingperiod", "SCHOOLYEAR"])
    assert (sexes, roles, session_types) == (["female", "male"], ["teacher"], ["gradingPeriod", "schoolYear"])


def test_m18_case_is_folded_onto_the_values_of_this_file_only():
    # aide is a users.csv role, not an enrollment role: the validator must still reject it there.
    assert column_of("enrollments", "role", ["Aide"]) == (["Aide"], [])
    assert column_of("users", "role", ["Aide"])[0] == ["aide"]


def test_m18_enum_aliases_from_the_profile_before_case():
    profile = DistrictProfile.from_mapping({"enum_aliases": {"role": {"Lehrer": "teacher", "Schüler": "student"}}})
    fixed, diagnostics = column_of("users", "role", ["Lehrer", "Schüler", "Teacher", "lehrer"], profile)
    assert fixed == ["teacher", "student", "teacher", "lehrer"]
    assert_finding(only(diagnostics, "fix.enum_alias"), "fixed", "users.csv", 2, "role", "Lehrer", 2)
    assert_finding(only(diagnostics, "fix.enum_case"), "fixed", "users.csv", 4, "role", "Teacher", 1)


def test_m19_iso_dates_are_untouched():
    assert column_of("enrollments", "beginDate", ["2024-04-03", ""]) == (["2024-04-03", ""], [])


def test_m19_ambiguous_dates_are_an_error_naming_both_formats():
    fixed, diagnostics = column_of("enrollments", "beginDate", ["03/04/2024", "4/3/2024"])
    assert fixed == ["03/04/2024", "4/3/2024"]
    finding = only(diagnostics, "value.date_ambiguous")
    assert_finding(finding, "error", "enrollments.csv", 2, "beginDate", "03/04/2024", 2)
    assert "'%m/%d/%Y' (month first) or '%d/%m/%Y' (day first)" in finding.message


@pytest.mark.parametrize(
    ("value", "date_format"), [("13/04/2024", "%d/%m/%Y"), ("4/13/2024", "%m/%d/%Y"), ("4.13.24", "%m.%d.%y")]
)
def test_m19_unambiguous_dates_are_not_guessed_but_the_message_names_the_format(value, date_format):
    fixed, diagnostics = column_of("academicSessions", "endDate", [value])
    assert fixed == [value]
    finding = only(diagnostics, "value.date_ambiguous")
    assert_finding(finding, "error", "academicSessions.csv", 2, "endDate", value, 1)
    assert f"would be read with the district profile's date_format '{date_format}'" in finding.message


def test_m19_dates_that_are_not_numeric_day_month_year_are_left_to_the_validator():
    assert column_of("enrollments", "endDate", ["June 7", "13/13/2024", "2024/06/07"]) == (
        ["June 7", "13/13/2024", "2024/06/07"], [],
    )


def test_m19_dates_in_other_scripts_digits_are_left_to_the_validator_without_crashing():
    # Python's \d matches Arabic-Indic digits, which pandas cannot turn into numbers: ASCII digits only.
    assert column_of("enrollments", "endDate", ["\u0661\u0662/\u0660\u0663/\u0662\u0660\u0662\u0664"]) == (
        ["\u0661\u0662/\u0660\u0663/\u0662\u0660\u0662\u0664"], [],
    )


def test_m19_the_profile_date_format_converts_dates_it_reads():
    profile = DistrictProfile.from_mapping({"date_format": "%d/%m/%Y"})
    fixed, diagnostics = column_of("demographics", "birthDate", ["03/04/2012", "2012-04-03", "4/13/2012", ""], profile)
    assert fixed == ["2012-04-03", "2012-04-03", "4/13/2012", ""]
    finding = only(diagnostics, "fix.date_format")
    # birthDate is personal: the original value is masked.
    assert_finding(finding, "fixed", "demographics.csv", 2, "birthDate", "<masked: 10 chars>", 1)
    assert "'%d/%m/%Y'" in finding.message
    assert not [d for d in diagnostics if d.rule == "value.date_ambiguous"]


@pytest.mark.parametrize(
    ("value", "utc", "message"),
    [
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05.000Z", "normalised to UTC"),
        ("2024-01-02T03:04:05.5Z", "2024-01-02T03:04:05.500Z", "normalised to UTC"),
        ("2024-01-02T03:04:05.123456Z", "2024-01-02T03:04:05.123Z", "normalised to UTC"),
        ("2024-01-02T01:04:05+02:00", "2024-01-01T23:04:05.000Z", "normalised to UTC"),
        ("2024-01-02T01:04:05.250-0500", "2024-01-02T06:04:05.250Z", "normalised to UTC"),
        ("2024-01-02", "2024-01-02T00:00:00.000Z", "bare date read as midnight UTC"),
    ],
)
def test_m19_date_last_modified_is_normalised_to_utc_with_milliseconds(value, utc, message):
    fixed, diagnostics = column_of("orgs", "dateLastModified", [value])
    assert fixed == [utc]
    finding = only(diagnostics, "fix.datetime")
    assert_finding(finding, "fixed", "orgs.csv", 2, "dateLastModified", value, 1)
    assert message in finding.message


def test_m19_date_last_modified_without_a_zone_or_unreadable_is_left_as_delivered():
    values = ["2024-01-02T03:04:05.000Z", "2024-01-02 03:04:05", "2024-01-02T03:04:05", "2024-13-02", "yesterday"]
    assert column_of("orgs", "dateLastModified", values) == (values, [])


def test_m20_the_spec_example_timestamp_is_reported_once_per_file():
    fixed, diagnostics = column_of("users", "dateLastModified", [SPEC_EXAMPLE_DATETIME] * 30)
    assert fixed == [SPEC_EXAMPLE_DATETIME] * 30
    finding = only(diagnostics, "fix.datetime")
    assert_finding(finding, "warning", "users.csv", 2, "dateLastModified", SPEC_EXAMPLE_DATETIME, 30)
    assert "spec's example timestamp" in finding.message


def test_m21_single_digit_grades_get_their_leading_zero():
    fixed, diagnostics = column_of("courses", "grades", ["9", "9,10", "09", "12"])
    assert fixed == ["09", "09,10", "09", "12"]
    assert_finding(only(diagnostics, "fix.grade"), "fixed", "courses.csv", 2, "grades", "9", 2)
    assert not [d for d in diagnostics if d.rule == "value.grade_unknown"]


def test_m21_ids_keep_their_leading_zeros():
    assert column_of("courses", "sourcedId", ["03100500", "0042"]) == (["03100500", "0042"], [])


def test_m22_grade_words_become_ceds_codes_in_every_list_item():
    fixed, diagnostics = column_of("users", "grades", ["K", "Kindergarten", "PreK,K,1", "kg", "other"])
    assert fixed == ["KG", "KG", "PK,KG,01", "KG", "Other"]
    assert_finding(only(diagnostics, "fix.grade"), "fixed", "users.csv", 2, "grades", "K", 5)


def test_m22_the_profile_grade_map_goes_first():
    profile = DistrictProfile.from_mapping({"grade_map": {"0": "KG", "K": "TK"}})
    fixed, diagnostics = column_of("classes", "grades", ["0", "K", "1"], profile)
    assert fixed == ["KG", "TK", "01"]
    assert_finding(only(diagnostics, "fix.grade"), "fixed", "classes.csv", 2, "grades", "0", 3)


def test_m22_unknown_grades_are_a_warning_and_kept_raw():
    fixed, diagnostics = column_of("classes", "grades", ["0", "09,Year 10", "10", "0"])
    assert fixed == ["0", "09,Year 10", "10", "0"]
    finding = only(diagnostics, "value.grade_unknown")
    assert_finding(finding, "warning", "classes.csv", 2, "grades", "0", 3)
    assert "line(s) 2, 3, 5" in finding.message


def test_m27_spaces_around_ids_references_and_list_items_are_trimmed():
    rows = [{"sourcedId": " k1 ", "title": " Algebra  I ", "courseSourcedId": "c1\t", "schoolSourcedId": "s1",
             "termSourcedIds": " t1 , t2", "subjects": "Science, Social Studies ", "periods": "1"}]
    fixed, diagnostics = normalized("classes", rows)
    row = fixed.iloc[0]
    assert (row["sourcedId"], row["courseSourcedId"], row["termSourcedIds"]) == ("k1", "c1", "t1,t2")
    assert row["subjects"] == "Science,Social Studies"  # inner space of an item kept
    assert row["title"] == " Algebra  I "  # free text untouched
    assert_finding(only(diagnostics, "fix.whitespace", "sourcedId"), "fixed", "classes.csv", 2, "sourcedId", " k1 ", 1)
    assert only(diagnostics, "fix.whitespace", "termSourcedIds").value == " t1 , t2"
    assert {d.column for d in diagnostics} == {"sourcedId", "courseSourcedId", "termSourcedIds", "subjects"}


def test_m27_names_are_untouched():
    rows = [{"givenName": " Mary Ann ", "familyName": "van der Berg", "username": " mvdb "}]
    fixed, diagnostics = normalized("users", rows)
    assert fixed.iloc[0][["givenName", "familyName", "username"]].tolist() == [" Mary Ann ", "van der Berg", " mvdb "]
    assert diagnostics == []


def test_m28_null_tokens_in_any_case_read_as_blank():
    values = ["NULL", "null", "Null", "N/A", "n/a", " NULL ", "NULLS", "d1"]
    fixed, diagnostics = column_of("orgs", "parentSourcedId", values)
    assert fixed == ["", "", "", "", "", "", "NULLS", "d1"]
    assert_finding(only(diagnostics, "fix.null_token"), "fixed", "orgs.csv", 2, "parentSourcedId", "NULL", 6)


def test_m28_null_tokens_in_personal_columns_are_reported_masked():
    _, diagnostics = column_of("users", "email", ["NULL"])
    assert_finding(only(diagnostics, "fix.null_token"), "fixed", "users.csv", 2, "email", "<masked: 4 chars>", 1)


def test_m28_a_family_name_null_is_a_name_not_a_blank():
    assert column_of("users", "familyName", ["Null", "NULL"]) == (["Null", "NULL"], [])


@pytest.mark.parametrize(
    "sourced_id", ["jane.doe@example.org", "S56789@summit.org", "Mary O'Neil", "José García López"]
)
def test_m30_sourced_ids_that_look_personal_are_a_masked_warning(sourced_id):
    fixed, diagnostics = column_of("users", "sourcedId", [sourced_id, "u-0001"])
    assert fixed == [sourced_id, "u-0001"]
    finding = only(diagnostics, "value.id_personal")
    assert_finding(finding, "warning", "users.csv", 2, "sourcedId", f"<masked: {len(sourced_id)} chars>", 1)
    assert sourced_id not in finding.describe()


def test_m30_opaque_ids_are_not_flagged():
    assert column_of("users", "sourcedId", ["u-0001", "3f2a-99", "STU.12345", "Algebra1"]) == (
        ["u-0001", "3f2a-99", "STU.12345", "Algebra1"], [],
    )


def test_m33_end_dates_are_inclusive_so_normalisation_leaves_them_as_delivered():
    # rostersync reads endDate as the last day of access (documented in normalize.py): no shift by a day.
    rows = [{"sourcedId": "e1", "beginDate": "2023-08-21", "endDate": "2024-06-07"}]
    fixed, diagnostics = normalized("enrollments", rows)
    assert fixed.iloc[0][["beginDate", "endDate"]].tolist() == ["2023-08-21", "2024-06-07"]
    assert diagnostics == []
    sessions, _ = column_of("academicSessions", "endDate", ["2024-06-07"])
    assert sessions == ["2024-06-07"]
    import rostersync_assets.oneroster.normalize as normalize_module

    assert "INCLUSIVE" in (normalize_module.__doc__ or "")
