"""REFERENCE §14 file-level catalogue: one small inline fixture per messy-input case and the prescribed reaction.

Also: OneRoster 1.0/1.2 packages, zipped packages, and the pyarrow fast path reading exactly like csv.
"""

from __future__ import annotations

import io
import time
import zipfile

import pandas as pd
import pytest

from rostersync_assets.oneroster import reader, spec
from rostersync_assets.oneroster.profile import DistrictProfile
from rostersync_assets.oneroster.reader import LINE_COLUMN, read_package
from rostersync_assets.oneroster.validate import validate_package
from rostersync_assets.oneroster.formats import read_package_zip
from rostersync_assets_tests.test_oneroster_reader import (
    VALID_ROWS,
    csv_bytes,
    edited_rows,
    manifest_bytes,
    package_files,
    rules,
    table_bytes,
)

LEGACY = DistrictProfile(legacy_v1_0=True)


def _rule_set(package: reader.RosterPackage) -> set[tuple[str, str]]:
    return {(d.severity, d.rule) for d in package.diagnostics}


def test_m01_bom_is_stripped() -> None:
    package = read_package(package_files(orgs=b"\xef\xbb\xbf" + table_bytes("orgs")))
    assert rules(package) == [("fixed", "file.bom", "orgs.csv")]
    assert package.tables["orgs"].columns[0] == "sourcedId"


def test_m02_non_utf8_uses_the_profile_fallback_encoding() -> None:
    raw = table_bytes("users").replace("Samuel".encode(), "Samuél".encode("cp1252"))
    assert rules(read_package(package_files(users=raw))) == [("fatal", "file.encoding", "users.csv")]

    package = read_package(package_files(users=raw), DistrictProfile(fallback_encoding="cp1252"))
    assert ("fixed", "file.encoding_fallback", "users.csv") in rules(package)
    assert package.tables["users"].loc[1, "givenName"] == "Samuél"


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_m03_line_endings_and_missing_final_newline(newline: str) -> None:
    raw = table_bytes("users", newline=newline).rstrip(newline.encode())
    package = read_package(package_files(users=raw))
    pd.testing.assert_frame_equal(package.tables["users"], read_package(package_files()).tables["users"])


def test_m04_ragged_rows_trim_empty_cells_and_reject_real_extras() -> None:
    header, first, second, third = table_bytes("users").rstrip(b"\n").split(b"\n")
    package = read_package(package_files(users=b"\n".join([header, first + b",", second + b",x", third])))
    assert [(d.severity, d.rule, d.line) for d in package.diagnostics] == [
        ("error", "row.width", 3), ("fixed", "row.trailing_empty_cells", 2)
    ]


def test_m05_blank_trailing_header_names_warn() -> None:
    columns = [*spec.SPECS["orgs"].columns, "", ""]
    rows = ([*(row.get(c, "") for c in spec.SPECS["orgs"].columns), "", ""] for row in VALID_ROWS["orgs"])
    package = read_package(package_files(orgs=csv_bytes(columns, rows)))
    assert _rule_set(package) == {("warning", "file.header_unknown_column")}
    assert len(package.tables["orgs"]) == 2


def test_m06_header_typo_is_a_missing_spec_column() -> None:
    raw = table_bytes("users").replace(b"dateLastModified", b"dataLastModified", 1)
    package = read_package(package_files(users=raw))
    assert [(d.rule, d.column) for d in package.diagnostics] == [("file.header_missing_column", "dateLastModified")]
    assert "users" not in package.tables


def test_m07_file_name_case_is_matched_and_fixed() -> None:
    files = package_files()
    files["Users.csv"] = files.pop("users.csv")
    package = read_package(files)
    assert rules(package) == [("fixed", "fix.file_name_case", "Users.csv")]
    assert len(package.tables["users"]) == 3


def _v1_2_files(**replaced: bytes) -> dict[str, bytes]:
    """A valid 1.2 bulk package: the 1.1 files, a 1.2.1 users.csv and roles/userProfiles."""
    users_columns = reader.versions.USERS_V1_2_1.columns
    users = [{**row, "primaryOrgSourcedId": "s1"} for row in VALID_ROWS["users"]]
    roles = [
        {"sourcedId": "r1", "userSourcedId": "u1", "roleType": "primary", "role": "teacher", "orgSourcedId": "s1"},
        {"sourcedId": "r2", "userSourcedId": "u2", "roleType": "primary", "role": "student", "orgSourcedId": "s1"},
        {"sourcedId": "r3", "userSourcedId": "u2", "roleType": "primary", "role": "student", "orgSourcedId": "d1"},
        {"sourcedId": "r4", "userSourcedId": "u3", "roleType": "primary", "role": "parent", "orgSourcedId": "s1"},
        {"sourcedId": "r5", "userSourcedId": "u1", "roleType": "primary", "role": "principal", "orgSourcedId": "d1"},
    ]
    roles_columns = reader.versions.ROLES_V1_2.columns
    profiles_columns = reader.versions.USER_PROFILES_V1_2.columns
    modes = {**dict.fromkeys(spec.ENTITIES, "bulk"), "roles": "bulk", "userProfiles": "bulk"}
    files = package_files()
    files[spec.MANIFEST_FILE] = manifest_bytes(modes, version="1.2")
    files["users.csv"] = csv_bytes(users_columns, ([r.get(c, "") for c in users_columns] for r in users))
    files["roles.csv"] = csv_bytes(roles_columns, ([r.get(c, "") for c in roles_columns] for r in roles))
    files["userProfiles.csv"] = csv_bytes(
        profiles_columns, [["p1", "", "", "u1", "lms", "v1", "", "", "password", "tina", ""]]
    )
    return files | replaced


def test_m08_wrong_file_content_is_caught_by_the_header() -> None:
    files = _v1_2_files()
    files["userProfiles.csv"] = files["roles.csv"]
    package = read_package(files)
    assert ("fatal", "file.header_missing_column", "userProfiles.csv") in rules(package)


def test_m09_missing_manifest_is_fatal_unless_legacy_1_0() -> None:
    files = package_files()
    del files[spec.MANIFEST_FILE]
    assert rules(read_package(files)) == [("fatal", "manifest.missing", "manifest.csv")]
    legacy = read_package(files, LEGACY)
    assert legacy.version == "1.0" and legacy.modes == dict.fromkeys(spec.ENTITIES, "bulk")


def test_m10_manifest_typos_warn_and_version_1_is_accepted() -> None:
    files = package_files()
    files[spec.MANIFEST_FILE] = (
        files[spec.MANIFEST_FILE].replace(b"manifest.version,1.0", b"manifest.version,1")
        .replace(b"file.demographics,bulk", b"fiel.demographics,bulk") + b"source.systemName,absent\n"
    )
    package = read_package(files)
    assert _rule_set(package) == {
        ("warning", "manifest.property_unknown"), ("warning", "manifest.entry_missing"),
        ("warning", "manifest.file_unexpected"),
    }
    assert package.modes["demographics"] == "absent"


def test_m11_1_0_headers_under_a_1_1_manifest_name_the_version() -> None:
    raw = table_bytes("courses").replace(b"schoolYearSourcedId", b"schoolYearId").replace(b"grades", b"grade")
    package = read_package(package_files(courses=raw))
    (mismatch,) = package.diagnostics
    assert (mismatch.severity, mismatch.rule, mismatch.file) == ("fatal", "file.header_version_mismatch", "courses.csv")
    assert "OneRoster 1.0" in mismatch.message


def test_m11_1_1_users_in_a_1_2_package_name_the_version() -> None:
    package = read_package(_v1_2_files(**{"users.csv": table_bytes("users")}))
    assert ("fatal", "file.header_version_mismatch", "users.csv") in rules(package)
    assert "OneRoster 1.1" in next(d.message for d in package.diagnostics if d.rule == "file.header_version_mismatch")


def test_m12_column_subset_is_fatal_order_is_a_warning() -> None:
    columns = list(reversed(spec.SPECS["orgs"].columns))
    rows = ([row.get(c, "") for c in columns] for row in VALID_ROWS["orgs"])
    assert rules(read_package(package_files(orgs=csv_bytes(columns, rows)))) == [
        ("warning", "file.header_order", "orgs.csv")
    ]
    columns = [c for c in spec.SPECS["orgs"].columns if c != "type"]
    rows = ([row.get(c, "") for c in columns] for row in VALID_ROWS["orgs"])
    assert ("fatal", "file.header_missing_column", "orgs.csv") in rules(read_package(package_files(orgs=csv_bytes(columns, rows))))


def test_m13_extension_columns_metadata_silent_others_warn() -> None:
    columns = ["metadata.city", *spec.SPECS["orgs"].columns, "ext_vendor"]
    rows = (["Bend", *(row.get(c, "") for c in spec.SPECS["orgs"].columns), "7"] for row in VALID_ROWS["orgs"])
    package = read_package(package_files(orgs=csv_bytes(columns, rows)))
    assert [(d.rule, d.column) for d in package.diagnostics] == [
        ("file.header_unknown_column", "ext_vendor"), ("file.header_order", None)
    ]
    assert list(package.tables["orgs"].columns) == [*spec.SPECS["orgs"].columns, LINE_COLUMN]


def test_m14_header_only_bulk_file_is_fatal_never_delete_all() -> None:
    package = read_package(package_files(courses=table_bytes("courses", rows=[])))
    assert ("fatal", "file.empty", "courses.csv") in rules(package)
    assert not validate_package(package).accepted


def test_m15_bulk_lifecycle_values_warn_and_tobedeleted_leaves_the_snapshot() -> None:
    rows = edited_rows("users", 2, status="tobedeleted", dateLastModified="2024-03-01T12:00:00.000Z")
    package = read_package(package_files(users=table_bytes("users", rows)))
    assert [(d.severity, d.rule, d.line) for d in package.diagnostics] == [
        ("warning", "row.bulk_lifecycle_filled", 4), ("warning", "row.bulk_tobedeleted", 4)
    ]
    assert package.tables["users"]["sourcedId"].tolist() == ["u1", "u2"]


def test_m15_delta_rows_need_status_and_date_last_modified() -> None:
    rows = [{**row, "status": "active", "dateLastModified": "2024-03-01T12:00:00.000Z"} for row in VALID_ROWS["users"]]
    rows[0]["status"], rows[2]["dateLastModified"] = "", ""
    package = read_package(package_files(modes={"users": "delta"}, users=table_bytes("users", rows)))
    assert [(d.severity, d.rule, d.line) for d in package.diagnostics] == [
        ("error", "row.delta_status", 2), ("error", "row.delta_date_last_modified", 4)
    ]
    assert package.tables["users"]["sourcedId"].tolist() == ["u2"]


def test_m25_conflicting_duplicate_sourced_ids_are_rejected() -> None:
    rows = [*VALID_ROWS["orgs"], {**VALID_ROWS["orgs"][1], "name": "Other"}]
    report = validate_package(read_package(package_files(orgs=table_bytes("orgs", rows))))
    assert [(d.rule, d.line) for d in report.findings("orgs", "unique_sourced_ids")] == [
        ("unique.sourced_id", 3), ("unique.sourced_id", 4)
    ]


def test_m29_passwords_never_reach_diagnostics() -> None:
    rows = edited_rows("users", 0, role="Boss", password="Hunter2-secret")
    header, *lines = table_bytes("users", rows).split(b"\n")
    report = validate_package(read_package(package_files(users=b"\n".join([header, *lines[:-1], lines[0] + b",x"]))))
    assert report.diagnostics
    assert all("Hunter2" not in d.describe() for d in report.diagnostics)


def test_m31_quoting_everywhere_reads_like_plain() -> None:
    columns = spec.SPECS["orgs"].columns
    lines = [",".join(f'"{v}"' for v in values) for values in
             [columns, *([row.get(c, "") for c in columns] for row in VALID_ROWS["orgs"])]]
    package = read_package(package_files(orgs="\n".join(lines).encode()))
    pd.testing.assert_frame_equal(package.tables["orgs"], read_package(package_files()).tables["orgs"])


def test_m32_free_form_periods_and_quoted_lists_are_kept_raw() -> None:
    raw = table_bytes("classes", edited_rows("classes", 0, subjects="Science, Physics", periods="1-2"))
    table = read_package(package_files(classes=raw)).tables["classes"]
    assert table.loc[0, ["periods", "termSourcedIds"]].tolist() == ["1-2", "t1,t2"]
    assert [item.strip() for item in table.loc[0, "subjects"].split(",")] == ["Science", "Physics"]


def test_m34_large_files_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{**VALID_ROWS["enrollments"][1], "sourcedId": f"e{i}"} for i in range(200_000)]
    raw = table_bytes("enrollments", rows)
    monkeypatch.setattr(reader, "_parse_fast", _counting(reader._parse_fast))
    started = time.perf_counter()
    table = read_package(package_files(enrollments=raw)).tables["enrollments"]
    assert time.perf_counter() - started < 3
    assert len(table) == 200_000 and table[LINE_COLUMN].iloc[-1] == 200_001
    assert _counting.calls == 1


def _counting(function):  # type: ignore[no-untyped-def]
    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        _counting.calls += 1
        return function(*args, **kwargs)
    _counting.calls = 0
    return counted


# --- the fast path reads exactly like the csv module --------------------------------------------------


FAST_PATH_INPUTS = {
    "plain": table_bytes("users"),
    "crlf": table_bytes("users", newline="\r\n"),
    "cr": table_bytes("users", newline="\r").rstrip(b"\r"),
    "quoted": table_bytes("classes", edited_rows("classes", 0, subjects='Sci, "Phys"')),
    "line_break": table_bytes("classes", edited_rows("classes", 0, title="Two\nlines")),
    "blank_lines": table_bytes("users").replace(b"\n", b"\n\n", 2),
    "crlf_blank_lines": table_bytes("users", newline="\r\n").replace(b"\r\n", b"\r\n\r\n", 2),
    "cr_blank_lines": table_bytes("users", newline="\r").replace(b"\r", b"\r\r", 2),
    "trailing_blank_line": table_bytes("users") + b"\n",
    "no_final_newline": table_bytes("users").rstrip(b"\n"),
    "nul": table_bytes("users").replace(b"Samuel", b"Sam\x00el"),
    "ragged": table_bytes("users").rstrip(b"\n") + b",\n",
    "bad_utf8": table_bytes("users").replace(b"Samuel", b"Sam\xe9el"),
    "bom": b"\xef\xbb\xbf" + table_bytes("users"),
}


@pytest.mark.parametrize("name", sorted(FAST_PATH_INPUTS))
def test_fast_and_exact_paths_read_identically(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = FAST_PATH_INPUTS[name]
    entity = "classes" if raw.startswith(b"sourcedId,status,dateLastModified,title") else "users"
    files = package_files(**{entity: raw})
    exact = read_package(files)
    monkeypatch.setattr(reader, "FAST_PATH_MIN_BYTES", 0)
    fast = read_package(files)
    assert fast.diagnostics == exact.diagnostics
    assert fast.tables.keys() == exact.tables.keys()
    for key, table in exact.tables.items():
        pd.testing.assert_frame_equal(fast.tables[key], table)


# --- versions ---------------------------------------------------------------------------------------


def test_v1_2_users_get_role_and_orgs_from_roles() -> None:
    package = read_package(_v1_2_files())
    users = package.tables["users"].set_index("sourcedId")
    assert package.version == "1.2"
    assert users["role"].to_dict() == {"u1": "teacher", "u2": "student", "u3": "parent"}
    assert users.loc["u1", "orgSourcedIds"] == "d1,s1"
    assert list(package.tables["users"].columns) == [*spec.SPECS["users"].columns, LINE_COLUMN]
    assert validate_package(package).accepted


def test_v1_2_role_rules_and_administrator_mapping() -> None:
    files = _v1_2_files()
    files["users.csv"] = files["users.csv"].replace(b",s1,", b",d1,", 1)  # u1's primary org becomes d1
    files["roles.csv"] += b"r6,,,u2,primary,teacher,,,s1,\n"
    package = read_package(files)
    assert package.tables["users"].set_index("sourcedId").loc["u1", "role"] == "administrator"
    assert [(d.rule, d.line) for d in package.diagnostics if d.rule == "roles.primary_count"] == [
        ("roles.primary_count", 3), ("roles.primary_count", 7)
    ]


def test_v1_2_0_users_layout_with_resource_ids_is_accepted() -> None:
    columns = reader.versions.USERS_V1_2_0.columns
    users = [{**row, "primaryOrgSourcedId": "s1"} for row in VALID_ROWS["users"]]
    raw = csv_bytes(columns, ([r.get(c, "") for c in columns] for r in users))
    package = read_package(_v1_2_files(**{"users.csv": raw}))
    assert len(package.tables["users"]) == 3
    assert "file.header_missing_column" not in {d.rule for d in package.diagnostics}


def test_v1_0_package_is_converted_to_1_1_tables() -> None:
    files = package_files()
    del files[spec.MANIFEST_FILE]
    files["courses.csv"] = files["courses.csv"].replace(b"schoolYearSourcedId", b"schoolYearId").replace(
        b",grades,", b",grade,").replace(b",subjectCodes", b"")
    package = read_package(files, LEGACY)
    assert ("fixed", "version.converted", "courses.csv") in rules(package)
    assert package.tables["courses"].loc[0, "schoolYearSourcedId"] == "y1"


# --- zips -------------------------------------------------------------------------------------------


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, raw in entries:
            archive.writestr(name, raw)
    return buffer.getvalue()


def test_zip_package_reads_like_files() -> None:
    package = read_package_zip(_zip(sorted(package_files().items())))
    assert package.diagnostics == [] and len(package.tables) == 7


@pytest.mark.parametrize(
    ("name", "rule"),
    [("sub/users.csv", "package.zip_subdirectory"), ("../users.csv", "package.zip_unsafe_name"),
     ("/etc/users.csv", "package.zip_unsafe_name"), ("users.csv", "package.zip_duplicate_name")],
)
def test_unsafe_zips_are_fatal(name: str, rule: str) -> None:
    with pytest.warns(UserWarning) if name == "users.csv" else _no_warning():
        raw = _zip([*package_files().items(), (name, b"x")])
    package = read_package_zip(raw)
    assert ("fatal", rule) in _rule_set(package) and package.tables == {}


def test_zip_bomb_is_refused() -> None:
    raw = _zip([*package_files().items(), ("big.csv", b"0" * 5_000_000)])
    package = read_package_zip(raw, max_uncompressed=1_000_000)
    assert _rule_set(package) == {("fatal", "package.zip_too_large")}


class _no_warning:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None
