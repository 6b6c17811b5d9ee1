"""Reading OneRoster 1.1 packages: manifest, encodings, line endings, headers, rows — and diagnostics.

Fixtures are built inline as CSV bytes from spec.py so each test shows the one thing it breaks.
The helpers here are shared with test_oneroster_validate.py.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import pytest

from rostersync_assets.oneroster import spec
from rostersync_assets.oneroster.diagnostics import RULES, Diagnostic, mask
from rostersync_assets.oneroster.reader import LINE_COLUMN, RosterPackage, read_package, read_package_dir

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "oneroster-samples"

# A small, valid, referentially clean district. Columns not named are blank.
VALID_ROWS: dict[str, list[dict[str, str]]] = {
    "orgs": [
        {"sourcedId": "d1", "name": "Grand Bend ISD", "type": "district", "identifier": "0042"},
        {"sourcedId": "s1", "name": "Grand Bend High", "type": "school", "parentSourcedId": "d1"},
    ],
    "academicSessions": [
        {"sourcedId": "y1", "title": "2024", "type": "schoolYear", "startDate": "2023-08-21",
         "endDate": "2024-06-07", "schoolYear": "2024"},
        {"sourcedId": "t1", "title": "Fall", "type": "term", "startDate": "2023-08-21",
         "endDate": "2024-01-12", "parentSourcedId": "y1", "schoolYear": "2024"},
        {"sourcedId": "t2", "title": "Spring", "type": "term", "startDate": "2024-01-15",
         "endDate": "2024-06-07", "parentSourcedId": "y1", "schoolYear": "2024"},
    ],
    "courses": [
        {"sourcedId": "03100500", "schoolYearSourcedId": "y1", "title": "Algebra I", "grades": "09",
         "orgSourcedId": "s1"},
    ],
    "classes": [
        {"sourcedId": "k1", "title": "Algebra I - 1", "courseSourcedId": "03100500", "classType": "scheduled",
         "schoolSourcedId": "s1", "termSourcedIds": "t1,t2", "periods": "1-2"},
    ],
    "users": [
        {"sourcedId": "u1", "enabledUser": "true", "orgSourcedIds": "s1", "role": "teacher",
         "username": "tina.teach", "givenName": "Tina", "familyName": "Teachwell",
         "email": "tina.teach@example.org", "password": "Secret-9"},
        {"sourcedId": "u2", "enabledUser": "true", "orgSourcedIds": "s1,d1", "role": "student",
         "username": "sam.study", "userIds": "{Local:015}", "givenName": "Samuel", "familyName": "Studious",
         "agentSourcedIds": "u3", "grades": "09"},
        {"sourcedId": "u3", "enabledUser": "false", "orgSourcedIds": "s1", "role": "parent",
         "username": "pat.parent", "givenName": "Patricia", "familyName": "Studious", "agentSourcedIds": "u2"},
    ],
    "demographics": [
        {"sourcedId": "u2", "birthDate": "2009-02-28", "sex": "male", "white": "true",
         "hispanicOrLatinoEthnicity": "false", "cityOfBirth": "Springfield"},
    ],
    "enrollments": [
        {"sourcedId": "e1", "classSourcedId": "k1", "schoolSourcedId": "s1", "userSourcedId": "u1",
         "role": "teacher", "primary": "true"},
        {"sourcedId": "e2", "classSourcedId": "k1", "schoolSourcedId": "s1", "userSourcedId": "u2",
         "role": "student", "beginDate": "2023-08-21", "endDate": "2024-06-07"},
    ],
}


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[str]], newline: str = "\n") -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def table_bytes(entity: str, rows: Sequence[Mapping[str, str]] | None = None, newline: str = "\n") -> bytes:
    """A synced file with the spec header; rows default to VALID_ROWS."""
    columns = spec.SPECS[entity].columns
    rows = VALID_ROWS[entity] if rows is None else rows
    return csv_bytes(columns, ([row.get(column, "") for column in columns] for row in rows), newline)


def edited_rows(entity: str, index: int, **values: str) -> list[dict[str, str]]:
    """VALID_ROWS[entity] with the row at `index` changed."""
    rows = [dict(row) for row in VALID_ROWS[entity]]
    rows[index].update(values)
    return rows


def manifest_bytes(modes: Mapping[str, str], version: str = "1.1") -> bytes:
    """A manifest declaring every 1.1 file: `modes` for synced ones, absent for the rest."""
    declared = {**dict.fromkeys(sorted(spec.UNSYNCED_ENTITIES_V1_1), "absent"), **modes}
    rows = [("manifest.version", "1.0"), ("oneroster.version", version)]
    rows += [(f"file.{entity}", mode) for entity, mode in declared.items()]
    return csv_bytes(("propertyName", "value"), rows)


def package_files(modes: Mapping[str, str] | None = None, **files: bytes) -> dict[str, bytes]:
    """A valid bulk package; `modes` overrides manifest modes, keyword files (`users=b"..."`) replace files."""
    modes = {**dict.fromkeys(spec.ENTITIES, "bulk"), **(modes or {})}
    package = {spec.MANIFEST_FILE: manifest_bytes(modes)}
    package |= {f"{entity}.csv": table_bytes(entity) for entity, mode in modes.items() if mode != "absent"}
    package |= {f"{entity}.csv": raw for entity, raw in files.items()}
    return package


def rules(package: RosterPackage) -> list[tuple[str, str, str | None]]:
    return [(d.severity, d.rule, d.file) for d in package.diagnostics]


# --- a valid package --------------------------------------------------------------------------------


def test_valid_package_reads_every_file_as_strings_in_spec_order() -> None:
    package = read_package(package_files())

    assert package.version == "1.1"
    assert package.modes == dict.fromkeys(spec.ENTITIES, "bulk")
    assert package.diagnostics == []
    assert list(package.tables) == list(spec.ENTITIES)
    for entity, table in package.tables.items():
        assert list(table.columns) == [*spec.SPECS[entity].columns, LINE_COLUMN]
        assert all(table[column].dtype == "str" for column in spec.SPECS[entity].columns)
        assert table[LINE_COLUMN].dtype == "int64"
        assert table[LINE_COLUMN].tolist() == list(range(2, len(VALID_ROWS[entity]) + 2))
        expected = [[row.get(column, "") for column in spec.SPECS[entity].columns] for row in VALID_ROWS[entity]]
        assert table.drop(columns=LINE_COLUMN).to_numpy().tolist() == expected


def test_ids_keep_leading_zeros_and_blanks_are_empty_strings() -> None:
    package = read_package(package_files())

    assert package.tables["courses"].loc[0, "sourcedId"] == "03100500"
    assert package.tables["classes"].loc[0, "courseSourcedId"] == "03100500"
    assert package.tables["orgs"].loc[0, "identifier"] == "0042"
    assert package.tables["orgs"].loc[0, "parentSourcedId"] == ""


def test_read_package_dir_reads_top_level_files(tmp_path: Path) -> None:
    for name, raw in package_files().items():
        (tmp_path / name).write_bytes(raw)
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "users.csv").write_bytes(b"ignored")

    from_dir = read_package_dir(tmp_path)
    in_memory = read_package(package_files())

    assert from_dir.diagnostics == in_memory.diagnostics == []
    for entity, table in in_memory.tables.items():
        pd.testing.assert_frame_equal(from_dir.tables[entity], table)


# --- manifest ---------------------------------------------------------------------------------------


def test_missing_manifest_is_fatal_and_nothing_is_read() -> None:
    files = package_files()
    del files[spec.MANIFEST_FILE]

    package = read_package(files)

    assert rules(package) == [("fatal", "manifest.missing", "manifest.csv")]
    assert package.tables == {}
    assert package.modes == dict.fromkeys(spec.ENTITIES, "absent")


@pytest.mark.parametrize("version", ["1.0", "1.3", "2.0", ""])
def test_only_oneroster_1_1_and_1_2_manifests_are_supported(version: str) -> None:
    files = package_files()
    files[spec.MANIFEST_FILE] = manifest_bytes(dict.fromkeys(spec.ENTITIES, "bulk"), version=version)

    package = read_package(files)

    assert rules(package) == [("fatal", "manifest.version_unsupported", "manifest.csv")]
    assert package.version == version
    assert package.tables == {}


def test_manifest_without_version_row_is_unsupported() -> None:
    files = package_files()
    files[spec.MANIFEST_FILE] = files[spec.MANIFEST_FILE].replace(b"oneroster.version,1.1\n", b"")

    package = read_package(files)

    assert rules(package) == [("fatal", "manifest.version_unsupported", "manifest.csv")]
    assert "missing" in package.diagnostics[0].message


def test_manifest_header_must_be_property_name_value() -> None:
    files = package_files()
    files[spec.MANIFEST_FILE] = files[spec.MANIFEST_FILE].replace(b"propertyName,value", b"property,value")

    assert rules(read_package(files)) == [("fatal", "manifest.invalid", "manifest.csv")]


def test_manifest_row_with_wrong_width_is_fatal() -> None:
    files = package_files()
    files[spec.MANIFEST_FILE] += b"source.systemName,Acme,SIS\n"

    package = read_package(files)

    assert rules(package) == [("fatal", "manifest.invalid", "manifest.csv")]
    assert package.diagnostics[0].line == 17


def test_duplicate_manifest_property_is_fatal() -> None:
    files = package_files()
    files[spec.MANIFEST_FILE] += b"file.users,absent\n"

    package = read_package(files)

    assert rules(package) == [("fatal", "manifest.property_duplicate", "manifest.csv")]
    assert package.diagnostics[0].value == "file.users"


def test_invalid_mode_is_fatal() -> None:
    files = package_files()
    files[spec.MANIFEST_FILE] = files[spec.MANIFEST_FILE].replace(b"file.users,bulk", b"file.users,full")

    package = read_package(files)

    assert [(d.rule, d.value) for d in package.diagnostics] == [("manifest.mode_invalid", "full")]
    assert package.tables == {}


def test_misspelt_file_entry_is_unknown_and_the_file_absent() -> None:
    files = package_files(modes={"demographics": "absent"})
    files[spec.MANIFEST_FILE] = files[spec.MANIFEST_FILE].replace(b"file.demographics,", b"fiel.demographics,")

    package = read_package(files)

    assert rules(package) == [
        ("warning", "manifest.property_unknown", "manifest.csv"),
        ("warning", "manifest.entry_missing", "manifest.csv"),
    ]
    assert package.diagnostics[0].value == "fiel.demographics"
    assert package.modes["demographics"] == "absent"
    assert "demographics" not in package.tables


def test_declared_file_missing_from_package_is_fatal() -> None:
    files = package_files()
    del files["users.csv"]

    package = read_package(files)

    assert rules(package) == [("fatal", "manifest.file_missing", "users.csv")]
    assert "users" not in package.tables
    assert "enrollments" in package.tables


def test_unsynced_declared_file_missing_is_fatal_too() -> None:
    files = package_files()
    files[spec.MANIFEST_FILE] = files[spec.MANIFEST_FILE].replace(b"file.resources,absent", b"file.resources,bulk")

    assert rules(read_package(files)) == [("fatal", "manifest.file_missing", "resources.csv")]


def test_file_declared_absent_is_not_read() -> None:
    files = package_files(modes={"demographics": "absent"})
    files["demographics.csv"] = table_bytes("demographics")

    package = read_package(files)

    assert rules(package) == [("warning", "manifest.file_unexpected", "demographics.csv")]
    assert package.modes["demographics"] == "absent"
    assert "demographics" not in package.tables


def test_unknown_file_is_reported_and_ignored() -> None:
    files = package_files()
    files["Users.csv"] = table_bytes("users")
    files["schools.csv"] = b"id\n1\n"

    package = read_package(files)

    assert rules(package) == [
        ("warning", "package.file_unknown", "Users.csv"),
        ("warning", "package.file_unknown", "schools.csv"),
    ]


def test_unsynced_files_are_structure_checked_but_not_read() -> None:
    files = package_files()
    files[spec.MANIFEST_FILE] = files[spec.MANIFEST_FILE].replace(b"file.resources,absent", b"file.resources,bulk")
    columns = spec.UNSYNCED_COLUMNS_V1_1["resources"]
    files["resources.csv"] = csv_bytes(columns, [["r1", "", "", "v1"] + [""] * 5, ["r 2", "", "", "v2"]])

    package = read_package(files)

    assert [(d.severity, d.rule, d.line) for d in package.diagnostics] == [("warning", "row.width", 3)]
    assert "resources" not in package.modes and "resources" not in package.tables


def test_unsynced_file_with_bad_header_or_ids_only_warns() -> None:
    files = package_files()
    files[spec.MANIFEST_FILE] = files[spec.MANIFEST_FILE].replace(b"file.categories,absent", b"file.categories,bulk")
    files["categories.csv"] = b"sourcedId,status,dateLastModified,title\nc 1,,,Homework\nc2,,,Tests\n"
    assert [(d.severity, d.rule, d.line, d.value) for d in read_package(files).diagnostics] == [
        ("warning", "value.guid", 2, "c 1")
    ]

    files["categories.csv"] = b"sourcedId,name\nc1,Homework\n"
    assert {(d.severity, d.rule) for d in read_package(files).diagnostics} == {
        ("warning", "file.header_missing_column")
    }


# --- encoding and line endings ----------------------------------------------------------------------


def test_bom_is_removed_and_reported_as_fixed() -> None:
    package = read_package(package_files(users=b"\xef\xbb\xbf" + table_bytes("users")))

    assert rules(package) == [("fixed", "file.bom", "users.csv")]
    assert package.tables["users"]["sourcedId"].tolist() == ["u1", "u2", "u3"]


def test_non_utf8_file_is_fatal_with_the_byte_offset() -> None:
    raw = table_bytes("users").replace("Samuel".encode(), "Samuél".encode("cp1252"))
    offset = raw.index(b"\xe9")

    package = read_package(package_files(users=raw))

    assert rules(package) == [("fatal", "file.encoding", "users.csv")]
    assert f"byte 0xe9 at offset {offset} " in package.diagnostics[0].message
    assert "users" not in package.tables
    assert "enrollments" in package.tables


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("final_newline", [True, False])
def test_line_endings_read_alike(newline: str, final_newline: bool) -> None:
    raw = table_bytes("users", newline=newline)
    raw = raw if final_newline else raw.rstrip(newline.encode())

    package = read_package(package_files(users=raw))

    assert package.diagnostics == []
    expected = read_package(package_files()).tables["users"]
    pd.testing.assert_frame_equal(package.tables["users"], expected)


def test_blank_lines_are_skipped_but_counted() -> None:
    header, first, *rest = table_bytes("users").split(b"\n")
    raw = b"\n".join([header, first, b"", b"", *rest, b"", b""])

    package = read_package(package_files(users=raw))

    assert package.diagnostics == []
    assert package.tables["users"][LINE_COLUMN].tolist() == [2, 5, 6]


def test_every_field_quoted_reads_like_unquoted() -> None:
    columns = spec.SPECS["orgs"].columns
    lines = [",".join(f'"{value}"' for value in values) for values in
             [columns, *([row.get(column, "") for column in columns] for row in VALID_ROWS["orgs"])]]

    package = read_package(package_files(orgs="\n".join(lines).encode()))

    assert package.diagnostics == []
    pd.testing.assert_frame_equal(package.tables["orgs"], read_package(package_files()).tables["orgs"])


def test_unparseable_csv_is_fatal() -> None:
    raw = table_bytes("courses", edited_rows("courses", 0, title="x" * 200_000))

    package = read_package(package_files(courses=raw))

    assert rules(package) == [("fatal", "file.malformed", "courses.csv")]
    assert "courses" not in package.tables


# --- header -----------------------------------------------------------------------------------------


def test_missing_spec_column_is_fatal_for_that_file() -> None:
    columns = [column for column in spec.SPECS["users"].columns if column != "password"]
    rows = ([row.get(column, "") for column in columns] for row in VALID_ROWS["users"])

    package = read_package(package_files(users=csv_bytes(columns, rows)))

    assert [(d.severity, d.rule, d.file, d.column) for d in package.diagnostics] == [
        ("fatal", "file.header_missing_column", "users.csv", "password")
    ]
    assert "users" not in package.tables
    assert "orgs" in package.tables


def test_duplicate_spec_column_is_fatal() -> None:
    columns = [*spec.SPECS["orgs"].columns, "name"]
    rows = ([*(row.get(column, "") for column in spec.SPECS["orgs"].columns), "x"] for row in VALID_ROWS["orgs"])

    package = read_package(package_files(orgs=csv_bytes(columns, rows)))

    assert [(d.rule, d.column) for d in package.diagnostics] == [("file.header_duplicate_column", "name")]
    assert "orgs" not in package.tables


def test_headerless_file_reports_missing_columns_but_never_its_personal_first_row() -> None:
    raw = table_bytes("users").split(b"\n", 1)[1]

    package = read_package(package_files(users=raw))

    assert {d.rule for d in package.diagnostics} == {"file.header_missing_column"}
    text = " ".join(d.describe() for d in package.diagnostics)
    assert "Tina" not in text and "tina.teach@example.org" not in text


def test_unknown_columns_are_dropped_with_a_warning_and_metadata_silently() -> None:
    columns = [*spec.SPECS["orgs"].columns, "metadata.city", "ext_vendor_id", ""]
    rows = ([*(row.get(column, "") for column in spec.SPECS["orgs"].columns), "Bend", "77", ""]
            for row in VALID_ROWS["orgs"])

    package = read_package(package_files(orgs=csv_bytes(columns, rows)))

    assert [(d.severity, d.rule, d.column) for d in package.diagnostics] == [
        ("warning", "file.header_unknown_column", "ext_vendor_id"),
        ("warning", "file.header_unknown_column", ""),
    ]
    assert list(package.tables["orgs"].columns) == [*spec.SPECS["orgs"].columns, LINE_COLUMN]


def test_columns_out_of_order_are_read_by_name_with_a_warning() -> None:
    columns = list(reversed(spec.SPECS["orgs"].columns))
    rows = ([row.get(column, "") for column in columns] for row in VALID_ROWS["orgs"])

    package = read_package(package_files(orgs=csv_bytes(columns, rows)))

    assert rules(package) == [("warning", "file.header_order", "orgs.csv")]
    pd.testing.assert_frame_equal(package.tables["orgs"], read_package(package_files()).tables["orgs"])


# --- empty files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [table_bytes("users", rows=[]), b"", b"\xef\xbb\xbf"], ids=["header", "zero", "bom"])
def test_bulk_file_without_rows_is_fatal(raw: bytes) -> None:
    package = read_package(package_files(users=raw))

    assert ("fatal", "file.empty", "users.csv") in rules(package)
    assert "users" not in package.tables


def test_delta_file_without_rows_is_an_empty_table() -> None:
    package = read_package(package_files(modes={"users": "delta"}, users=table_bytes("users", rows=[])))

    assert rules(package) == [("warning", "file.empty", "users.csv")]
    table = package.tables["users"]
    assert table.empty
    assert list(table.columns) == [*spec.SPECS["users"].columns, LINE_COLUMN]
    assert table["sourcedId"].dtype == "str"


def test_delta_rows_keep_status_and_date_last_modified() -> None:
    rows = [{**row, "status": "active", "dateLastModified": "2024-03-01T12:00:00.000Z"} for row in VALID_ROWS["users"]]
    rows[1]["status"] = "tobedeleted"

    package = read_package(package_files(modes={"users": "delta"}, users=table_bytes("users", rows)))

    assert package.modes["users"] == "delta"
    assert package.tables["users"].loc[1, ["status", "dateLastModified"]].tolist() == [
        "tobedeleted", "2024-03-01T12:00:00.000Z"
    ]


# --- rows -------------------------------------------------------------------------------------------


def test_row_with_too_few_or_too_many_cells_is_an_error_and_left_out() -> None:
    header, first, second, third = table_bytes("users").rstrip(b"\n").split(b"\n")
    raw = b"\n".join([header, first.rsplit(b",", 1)[0], second + b",extra", third])

    package = read_package(package_files(users=raw))

    assert [(d.severity, d.rule, d.line) for d in package.diagnostics] == [
        ("error", "row.width", 2),
        ("error", "row.width", 3),
    ]
    assert package.tables["users"][LINE_COLUMN].tolist() == [4]


def test_trailing_empty_cells_are_trimmed_once_per_file() -> None:
    header, first, second, third = table_bytes("users").rstrip(b"\n").split(b"\n")
    raw = b"\n".join([header, first, second + b",", third + b",,"])

    package = read_package(package_files(users=raw))

    assert [(d.severity, d.rule, d.line) for d in package.diagnostics] == [
        ("fixed", "row.trailing_empty_cells", 3)
    ]
    pd.testing.assert_frame_equal(package.tables["users"], read_package(package_files()).tables["users"])


def test_line_break_inside_a_quoted_cell_rejects_the_row_and_keeps_line_numbers() -> None:
    two_lines = {"sourcedId": "c2", "title": "Two\nlines", "orgSourcedId": "s1"}
    after = {**VALID_ROWS["courses"][0], "sourcedId": "c3"}
    raw = table_bytes("courses", [*VALID_ROWS["courses"], two_lines, after])

    package = read_package(package_files(courses=raw))

    assert [(d.rule, d.line) for d in package.diagnostics] == [("row.line_break", 3)]
    assert package.tables["courses"][LINE_COLUMN].tolist() == [2, 5]
    assert package.tables["courses"]["sourcedId"].tolist() == ["03100500", "c3"]


# --- diagnostics ------------------------------------------------------------------------------------


def test_describe_names_file_line_column_value_and_rule() -> None:
    diagnostic = Diagnostic.create(
        "error", "value.enum", "must be one of …", file="users.csv", line=14, column="role", value="Teacher"
    )

    assert diagnostic.describe() == "users.csv line 14, column role, value 'Teacher': value.enum — must be one of …"
    assert Diagnostic.create("fatal", "manifest.missing", "no manifest").describe() == (
        "manifest.missing — no manifest"
    )
    assert diagnostic.to_dict() == {
        "severity": "error", "rule": "value.enum", "message": "must be one of …",
        "file": "users.csv", "line": 14, "column": "role", "value": "Teacher",
    }


@pytest.mark.parametrize("column", sorted(spec.PERSONAL_COLUMNS))
def test_personal_values_are_masked(column: str) -> None:
    diagnostic = Diagnostic.create("error", "value.required", "x", column=column, value="Olivia Hardy")

    assert diagnostic.value == "<masked: 12 chars>"
    assert "Olivia" not in diagnostic.describe()


def test_non_personal_and_blank_values_are_kept() -> None:
    assert mask("role", "Teacher") == "Teacher"
    assert mask("givenName", "") == ""
    assert mask(None, "x") == "x"


def test_every_rule_is_documented_and_undocumented_rules_are_refused() -> None:
    assert all(rule.count(".") == 1 and explanation for rule, explanation in RULES.items())
    with pytest.raises(ValueError, match="undocumented"):
        Diagnostic.create("error", "value.made_up", "x")
    with pytest.raises(ValueError, match="severity"):
        Diagnostic.create("info", "value.enum", "x")  # type: ignore[arg-type]
