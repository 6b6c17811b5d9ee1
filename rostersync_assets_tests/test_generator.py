"""The synthetic district generator: the demo, the sync tests and the benchmarks all trust it.

A generated roster must be a valid, self-consistent bulk set, and `next_night` must change exactly
what its ExpectedChanges claims, or every sync check built on it would test the generator instead.
The diff here is computed independently, row values by sourcedId.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from rostersync_assets.oneroster.spec import ENTITIES, MANIFEST_FILE, SPECS
from rostersync_assets.sandbox.generator import (
    DistrictRoster,
    ExpectedChanges,
    generate_district,
    next_night,
    write_delivery,
)

# Three schools (elementary, middle, high), so cross-school references are exercised too.
STUDENTS = 1500
SEED = 20260115

Rows = dict[str, tuple[str, ...]]
Night = tuple[DistrictRoster, ExpectedChanges]


@pytest.fixture(scope="module")
def roster() -> DistrictRoster:
    return generate_district(students=STUDENTS, seed=SEED)


@pytest.fixture(scope="module")
def night_one(roster: DistrictRoster) -> Night:
    return next_night(roster, seed=SEED, night=1)


def _rows(roster: DistrictRoster, entity: str) -> Rows:
    frame = roster.tables[entity]
    return dict(zip(frame["sourcedId"], frame.itertuples(index=False, name=None)))


def _column(roster: DistrictRoster, entity: str, column: str) -> list[str]:
    return roster.tables[entity][column].tolist()


def _delivery_bytes(roster: DistrictRoster, out_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in write_delivery(roster, out_dir)}


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        return list(csv.reader(stream))


def _assert_references_resolve(roster: DistrictRoster) -> None:
    """Every reference the spec declares names an existing record (REFERENCE §8)."""
    ids = {entity: set(_column(roster, entity, "sourcedId")) for entity in ENTITIES}
    for entity, spec in SPECS.items():
        for reference in spec.references:
            for value in _column(roster, entity, reference.column):
                targets = value.split(",") if reference.is_list else [value]
                if value or reference.required:
                    missing = set(targets) - ids[reference.target]
                    assert not missing, f"{entity}.{reference.column} -> {missing}"


def _assert_ids_unique(roster: DistrictRoster) -> None:
    for entity in ENTITIES:
        ids = _column(roster, entity, "sourcedId")
        assert len(ids) == len(set(ids)), entity


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    first = _delivery_bytes(generate_district(students=300, seed=5), tmp_path / "a")
    again = _delivery_bytes(generate_district(students=300, seed=5), tmp_path / "b")
    other = _delivery_bytes(generate_district(students=300, seed=6), tmp_path / "c")
    assert first == again
    assert first["users.csv"] != other["users.csv"]
    assert first["enrollments.csv"] != other["enrollments.csv"]


def test_next_night_is_deterministic_in_seed_and_night(
    roster: DistrictRoster, tmp_path: Path
) -> None:
    first, expected = next_night(roster, seed=SEED, night=3)
    again, expected_again = next_night(roster, seed=SEED, night=3)
    other, _ = next_night(roster, seed=SEED, night=4)
    assert _delivery_bytes(first, tmp_path / "a") == _delivery_bytes(again, tmp_path / "b")
    assert expected == expected_again
    assert _rows(first, "users") != _rows(other, "users")


def test_tables_have_every_spec_column_and_only_strings(roster: DistrictRoster) -> None:
    assert list(roster.tables) == list(ENTITIES)
    for entity, frame in roster.tables.items():
        assert list(frame.columns) == list(SPECS[entity].columns)
        assert not frame.isna().any().any(), entity
        values = (value for row in _rows(roster, entity).values() for value in row)
        assert all(isinstance(value, str) for value in values), entity
        # Bulk rows: status and dateLastModified are blank (REFERENCE §3).
        assert set(frame["status"]) == {""} and set(frame["dateLastModified"]) == {""}


def test_rows_and_summary_present_the_tables(roster: DistrictRoster) -> None:
    first_user = next(roster.rows("users"))
    assert list(first_user) == list(SPECS["users"].columns)
    assert tuple(first_user.values()) == next(iter(_rows(roster, "users").values()))
    assert sum(1 for _ in roster.rows("enrollments")) == len(roster.tables["enrollments"])
    assert f"users {len(roster.tables['users']):,}" in roster.summary()


def test_generated_set_is_referentially_complete(roster: DistrictRoster) -> None:
    _assert_ids_unique(roster)
    _assert_references_resolve(roster)
    classes, enrollments = roster.tables["classes"], roster.tables["enrollments"]
    class_school = dict(zip(classes["sourcedId"], classes["schoolSourcedId"]))
    pairs = zip(enrollments["classSourcedId"], enrollments["schoolSourcedId"])
    assert all(class_school[class_id] == school for class_id, school in pairs)
    school_ids = set(roster.tables["orgs"].query("type == 'school'")["sourcedId"])
    assert set(_column(roster, "classes", "schoolSourcedId")) <= school_ids
    assert set(_column(roster, "users", "orgSourcedIds")) <= school_ids


def test_district_shape_and_ratios(roster: DistrictRoster) -> None:
    orgs = roster.tables["orgs"]
    district = orgs.query("type == 'district'")
    schools = orgs.query("type == 'school'")
    assert len(district) == 1 and len(schools) == 3
    assert set(schools["parentSourcedId"]) == set(district["sourcedId"])
    assert {name.split()[-2] for name in schools["name"]} == {"Elementary", "Middle", "High"}

    sessions = roster.tables["academicSessions"]
    year = sessions.query("type == 'schoolYear'")
    semesters = sessions.query("type == 'semester'")
    assert len(year) == 1 and len(semesters) == 2
    assert set(semesters["parentSourcedId"]) == set(year["sourcedId"])
    assert year["schoolYear"].iloc[0] == year["endDate"].iloc[0][:4]

    users = roster.tables["users"]
    students = users.query("role == 'student'")
    teachers = users.query("role == 'teacher'")
    assert len(students) == STUDENTS
    assert 1 / 19 < len(teachers) / len(students) < 1 / 15

    enrollments = roster.tables["enrollments"]
    student_enrollments = enrollments.query("role == 'student'")
    assert student_enrollments.groupby("userSourcedId").size().eq(6).all()
    assert set(student_enrollments["primary"]) == {"false"}
    teacher_enrollments = enrollments.query("role == 'teacher'")
    assert set(teacher_enrollments["primary"]) == {"true"}
    classes = _column(roster, "classes", "sourcedId")
    assert sorted(teacher_enrollments["classSourcedId"]) == sorted(classes)


def test_users_and_demographics_look_like_a_sis_export(roster: DistrictRoster) -> None:
    users = roster.tables["users"]
    students = users.query("role == 'student'")
    assert set(students["grades"]) <= {"KG", *(f"{grade:02d}" for grade in range(1, 13))}
    assert set(users["enabledUser"]) == {"true"} and set(users["password"]) == {""}
    assert all(re.fullmatch(r"\{SIS:[^:}]+\}", value) for value in users["userIds"])
    assert users["username"].is_unique and users["email"].str.contains("@").all()
    assert any(sourced_id.startswith("0") for sourced_id in students["sourcedId"])

    demographics = roster.tables["demographics"]
    assert sorted(demographics["sourcedId"]) == sorted(students["sourcedId"])
    assert set(demographics["sex"]) == {"female", "male"}
    for column in SPECS["demographics"].booleans:
        assert set(demographics[column]) <= {"true", "false"}
    assert demographics["birthDate"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()

    classes = roster.tables["classes"]
    assert set(classes["classType"]) == {"scheduled"}
    assert classes["location"].str.startswith("Room ").all() and (classes["periods"] != "").all()


def test_next_night_changes_exactly_what_it_expects(
    roster: DistrictRoster, night_one: Night
) -> None:
    tonight, expected = night_one
    for entity in ENTITIES:
        before, after = _rows(roster, entity), _rows(tonight, entity)
        assert expected.created[entity] == after.keys() - before.keys(), entity
        assert expected.removed[entity] == before.keys() - after.keys(), entity
        changed = {key for key in before.keys() & after.keys() if before[key] != after[key]}
        assert expected.updated[entity] == changed, entity
    assert expected.counts() == {
        "created": sum(map(len, expected.created.values())),
        "updated": sum(map(len, expected.updated.values())),
        "deactivated": sum(map(len, expected.removed.values())),
    }


def test_next_night_mix_is_realistic(
    roster: DistrictRoster, night_one: Night
) -> None:
    tonight, expected = night_one
    new_students = expected.created["users"]
    assert len(new_students) == STUDENTS // 100
    assert expected.created["demographics"] == new_students
    enrollments = tonight.tables["enrollments"]
    created = enrollments[enrollments["sourcedId"].isin(expected.created["enrollments"])]
    assert set(created["userSourcedId"]) == new_students
    assert len(created) == 6 * len(new_students)
    assert len(expected.updated["users"]) == round(len(roster.tables["users"]) / 100)
    assert len(expected.removed["enrollments"]) == round(STUDENTS * 6 / 200)
    yesterday = roster.tables["enrollments"]
    student_enrollments = set(yesterday.loc[yesterday["role"] == "student", "sourcedId"])
    assert expected.removed["enrollments"] <= student_enrollments

    before, after = _rows(roster, "classes"), _rows(tonight, "classes")
    columns = SPECS["classes"].columns
    location, periods = columns.index("location"), columns.index("periods")
    moved = [
        key
        for key in expected.updated["classes"]
        if before[key][location] != after[key][location]
        and before[key][periods] != after[key][periods]
    ]
    assert len(moved) >= 1 and len(expected.updated["classes"]) >= 2


def test_next_night_leaves_its_input_untouched(roster: DistrictRoster) -> None:
    snapshot = {entity: frame.copy(deep=True) for entity, frame in roster.tables.items()}
    tonight, _ = next_night(roster, seed=SEED, night=9)
    for frame in tonight.tables.values():
        frame.iloc[0, 0] = "changed-by-the-caller"
    for entity, frame in roster.tables.items():
        assert frame.equals(snapshot[entity]), entity


def test_chained_nights_stay_consistent(night_one: Night) -> None:
    night_two, expected = next_night(night_one[0], seed=SEED, night=2)
    _assert_ids_unique(night_two)
    _assert_references_resolve(night_two)
    assert expected.counts()["created"] > 0


def test_manifest_declares_our_seven_files_bulk_and_the_rest_absent(
    roster: DistrictRoster, tmp_path: Path
) -> None:
    written = write_delivery(roster, tmp_path)
    assert written[-1] == tmp_path / MANIFEST_FILE
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in written)
    rows = _read_csv(tmp_path / MANIFEST_FILE)
    assert rows[:3] == [
        ["propertyName", "value"],
        ["manifest.version", "1.0"],
        ["oneroster.version", "1.1"],
    ]
    assert rows[-1] == ["source.systemName", "rostersync generator"]
    absent = "categories classResources courseResources lineItems resources results".split()
    assert dict(rows[3:-1]) == {
        **{f"file.{entity}": "bulk" for entity in ENTITIES},
        **{f"file.{name}": "absent" for name in absent},
    }


def test_csv_files_follow_spec_order_and_rfc_4180(roster: DistrictRoster, tmp_path: Path) -> None:
    write_delivery(roster, tmp_path)
    for entity, spec in SPECS.items():
        content = (tmp_path / spec.file_name).read_bytes()
        assert b"\r" not in content and not content.startswith(b"\xef\xbb\xbf")
        assert content.decode("utf-8").split("\n", 1)[0] == ",".join(spec.columns)
    assert b'"ses-2026-s1,ses-2026-s2"' in (tmp_path / "classes.csv").read_bytes()


@pytest.mark.parametrize("entity", ENTITIES)
def test_every_value_survives_a_csv_round_trip(
    roster: DistrictRoster, tmp_path: Path, entity: str
) -> None:
    """Including the all-digit student ids with leading zeros, and quoted lists."""
    write_delivery(roster, tmp_path)
    header, *rows = _read_csv(tmp_path / SPECS[entity].file_name)
    assert header == list(SPECS[entity].columns)
    assert {row[0]: tuple(row) for row in rows} == _rows(roster, entity)
