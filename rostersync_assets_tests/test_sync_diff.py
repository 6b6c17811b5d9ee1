"""The change set: what travels to the LMS for bulk, delta and absent files (pure, no Dagster)."""

import hashlib
import json

import numpy as np
import pandas as pd

from rostersync_assets.oneroster.spec import SPECS
from rostersync_assets.sync.diff import CHANGE_COLUMNS, STATE_COLUMNS, build_change_set, empty_state
from rostersync_assets.sync.payloads import (
    content_hash,
    lms_record,
    natural_key_digests,
    payload_columns,
    record_schools,
    records_json,
    table_hashes,
)


def org_table(*rows: dict[str, str]) -> pd.DataFrame:
    columns = SPECS["orgs"].columns
    frame = pd.DataFrame([{c: r.get(c, "") for c in columns} for r in rows], columns=list(columns))
    frame["_line"] = range(2, len(frame) + 2)
    return frame


def state_of(table: pd.DataFrame, active: bool = True) -> pd.DataFrame:
    payloads = table_hashes(table, "orgs")
    return pd.DataFrame({"sourcedId": payloads["sourcedId"], "content_hash": payloads["content_hash"], "active": active})


DISTRICT = {"sourcedId": "d1", "name": "North", "type": "district"}
SCHOOL = {"sourcedId": "0042", "name": "Lake School", "type": "school", "parentSourcedId": "d1"}


def test_first_sync_creates_every_record_in_parent_first_order():
    users = pd.DataFrame([{c: "" for c in SPECS["users"].columns} | {"sourcedId": "u1", "role": "student"}])
    users["_line"] = [2]
    changes = build_change_set({"orgs": org_table(DISTRICT, SCHOOL), "users": users}, {"orgs": "bulk", "users": "bulk"}, {})
    assert list(changes["op"]) == ["create", "create", "create"]
    assert list(changes["entity"]) == ["orgs", "orgs", "users"]
    assert list(changes["sourcedId"]) == ["d1", "0042", "u1"]  # leading zero kept
    assert list(changes["line"]) == [2, 3, 2]
    assert list(changes["seq"]) == [0, 1, 2]


def test_unchanged_records_produce_no_change_and_edits_produce_updates():
    before = org_table(DISTRICT, SCHOOL)
    after = org_table(DISTRICT, SCHOOL | {"name": "Lake Middle School"})
    changes = build_change_set({"orgs": after}, {"orgs": "bulk"}, {"orgs": state_of(before)})
    assert changes[["op", "sourcedId"]].values.tolist() == [["update", "0042"]]
    assert changes["hash_before"].iloc[0] != changes["hash_after"].iloc[0]


def test_bulk_omission_deactivates_children_before_parents():
    users = pd.DataFrame([{c: "" for c in SPECS["users"].columns} | {"sourcedId": "u1"}])
    users["_line"] = [2]
    state = {"orgs": state_of(org_table(DISTRICT, SCHOOL)), "users": pd.DataFrame({"sourcedId": ["u1"], "content_hash": ["h"], "active": [True]})}
    changes = build_change_set(
        {"orgs": org_table(DISTRICT), "users": users.iloc[0:0]},
        {"orgs": "bulk", "users": "bulk"},
        state,
    )
    deactivations = changes[changes["op"] == "deactivate"]
    assert deactivations[["entity", "sourcedId"]].values.tolist() == [["users", "u1"], ["orgs", "0042"]]


def test_absent_file_touches_nothing():
    changes = build_change_set({"orgs": org_table()}, {"orgs": "absent"}, {"orgs": state_of(org_table(DISTRICT, SCHOOL))})
    assert changes.empty


def test_inactive_record_delivered_again_is_reactivated():
    table = org_table(DISTRICT)
    changes = build_change_set({"orgs": table}, {"orgs": "bulk"}, {"orgs": state_of(table, active=False)})
    assert changes[["op", "sourcedId"]].values.tolist() == [["reactivate", "d1"]]


def test_delta_applies_rows_and_tobedeleted_without_inferring_removals():
    state = state_of(org_table(DISTRICT, SCHOOL, {"sourcedId": "s2", "name": "Hill", "type": "school"}))
    delta = org_table(
        SCHOOL | {"status": "tobedeleted", "dateLastModified": "2026-01-01T00:00:00.000Z"},
        {"sourcedId": "s3", "name": "New", "type": "school", "status": "active", "dateLastModified": "2026-01-01T00:00:00.000Z"},
    )
    changes = build_change_set({"orgs": delta}, {"orgs": "delta"}, {"orgs": state})
    assert sorted(changes[["op", "sourcedId"]].values.tolist()) == [["create", "s3"], ["deactivate", "0042"]]


def test_payload_leaves_out_passwords_and_bookkeeping_so_they_never_cause_writes():
    row = {c: "x" for c in SPECS["users"].columns}
    record = lms_record(row, "users")
    assert "password" not in record and "status" not in record and "dateLastModified" not in record
    changed_password = row | {"password": "other", "dateLastModified": "y"}
    assert content_hash(row, "users") == content_hash(changed_password, "users")
    assert content_hash(row | {"email": "other"}, "users") != content_hash(row, "users")


def test_table_hashes_equal_the_per_record_hash_and_records_carry_the_payload():
    table = org_table(DISTRICT, SCHOOL)
    hashes = table_hashes(table, "orgs")
    assert list(hashes["content_hash"]) == [content_hash(DISTRICT, "orgs"), content_hash(SCHOOL, "orgs")]
    assert json.loads(records_json(table, "orgs")[1]) == lms_record(SCHOOL, "orgs")


def test_empty_state_has_the_expected_columns():
    assert list(empty_state().columns) == ["sourcedId", "content_hash", "active", "school", "natural_key"]
    assert STATE_COLUMNS == list(empty_state().columns)


# --- hashes and records stay what they were: the sync state holds them ---------------------------


def test_content_hash_is_sha256_of_the_payload_values_joined_by_unit_separator():
    """The definition the stored sync state depends on: changing it would update every record once."""
    row = {"sourcedId": "0042", "name": "Lake School", "type": "school", "identifier": "", "parentSourcedId": "d1", "status": "x"}
    expected = hashlib.sha256("0042\x1fLake School\x1fschool\x1f\x1fd1".encode()).hexdigest()
    assert content_hash(row, "orgs") == expected
    assert table_hashes(org_table(row), "orgs")["content_hash"].tolist() == [expected]


def test_table_hashes_and_records_agree_with_the_per_record_forms_on_awkward_values():
    awkward = [
        DISTRICT | {"name": "Zoë's \"École\" 日本 \\ back"},
        SCHOOL | {"name": "tab\there\nline \x01 ctl\u2028"},
        {"sourcedId": "s9", "name": "Blank identifier", "type": "school"},
    ]
    table = org_table(*awkward)
    table.loc[2, "identifier"] = None  # a missing value reads as "", as lms_record reads it
    assert table_hashes(table, "orgs")["content_hash"].tolist() == [content_hash(r, "orgs") for r in awkward]
    assert [json.loads(r) for r in records_json(table, "orgs")] == [lms_record(r, "orgs") for r in awkward]
    without_column = table.drop(columns="identifier")
    assert table_hashes(without_column, "orgs")["content_hash"].tolist() == [content_hash(r, "orgs") for r in awkward]


def test_table_hashes_keep_sourced_ids_and_lines_and_handle_an_empty_table():
    hashes = table_hashes(org_table(DISTRICT, SCHOOL), "orgs")
    assert hashes[["sourcedId", "line"]].values.tolist() == [["d1", 2], ["0042", 3]]
    assert table_hashes(org_table(), "orgs").empty


# --- school and natural key --------------------------------------------------------------------


def table_of(entity: str, *rows: dict[str, str]) -> pd.DataFrame:
    columns = SPECS[entity].columns
    frame = pd.DataFrame([{c: r.get(c, "") for c in columns} for r in rows], columns=list(columns))
    frame["_line"] = range(2, len(frame) + 2)
    return frame


def digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def test_record_schools_name_the_school_each_record_belongs_to():
    assert record_schools(org_table(DISTRICT, SCHOOL), "orgs").tolist() == ["", "0042"]
    assert record_schools(table_of("courses", {"sourcedId": "c1", "orgSourcedId": "0042"}), "courses").tolist() == ["0042"]
    assert record_schools(table_of("classes", {"sourcedId": "k1", "schoolSourcedId": "0042"}), "classes").tolist() == ["0042"]
    users = table_of("users", {"sourcedId": "u1", "orgSourcedIds": "0042,0043"}, {"sourcedId": "u2", "orgSourcedIds": " 0043 "})
    assert record_schools(users, "users").tolist() == ["0042", "0043"]
    assert record_schools(table_of("enrollments", {"sourcedId": "e1", "schoolSourcedId": "0042"}), "enrollments").tolist() == ["0042"]
    assert record_schools(table_of("academicSessions", {"sourcedId": "t1", "title": "Fall"}), "academicSessions").tolist() == [""]
    assert record_schools(table_of("demographics", {"sourcedId": "u1"}), "demographics").tolist() == [""]


def test_natural_key_digests_follow_the_key_of_each_entity_and_never_hold_the_key():
    users = table_of(
        "users",
        {"sourcedId": "u1", "username": "jdoe", "orgSourcedIds": "s2,s1"},
        {"sourcedId": "u2", "username": "jdoe", "orgSourcedIds": "s1, s2"},  # same person under a new id
        {"sourcedId": "u3", "username": "", "orgSourcedIds": "s1"},
    )
    keys = natural_key_digests(users, "users").tolist()
    assert keys[0] == keys[1] == digest("jdoe", "s1,s2")
    assert keys[2] == ""  # a key with an empty part identifies nothing
    assert not any("jdoe" in k for k in keys)
    classes = table_of(
        "classes",
        {"sourcedId": "k1", "classCode": "MATH-1", "schoolSourcedId": "0042", "termSourcedIds": "t2,t1"},
        {"sourcedId": "k2", "classCode": "", "schoolSourcedId": "0042", "termSourcedIds": "t1"},
    )
    assert natural_key_digests(classes, "classes").tolist() == [digest("MATH-1", "0042", "t1,t2"), ""]
    courses = table_of("courses", {"sourcedId": "c1", "courseCode": "M1", "orgSourcedId": "0042"})
    assert natural_key_digests(courses, "courses").tolist() == [digest("M1", "0042")]
    enrollments = table_of("enrollments", {"sourcedId": "e1", "userSourcedId": "u1", "classSourcedId": "k1", "role": "student"})
    assert natural_key_digests(enrollments, "enrollments").tolist() == [digest("u1", "k1", "student")]
    orgs = org_table(DISTRICT, SCHOOL | {"identifier": "NCES-1"})
    assert natural_key_digests(orgs, "orgs").tolist() == ["", digest("NCES-1")]
    sessions = table_of("academicSessions", {"sourcedId": "t1", "title": "Fall", "type": "semester", "schoolYear": "2027", "startDate": "2026-09-01"})
    assert natural_key_digests(sessions, "academicSessions").tolist() == [digest("Fall", "semester", "2027", "2026-09-01")]
    assert natural_key_digests(table_of("demographics", {"sourcedId": "u1"}), "demographics").tolist() == [""]


def full_state(entity: str, table: pd.DataFrame, active: bool = True) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sourcedId": table["sourcedId"],
            "content_hash": table_hashes(table, entity)["content_hash"],
            "active": active,
            "school": record_schools(table, entity),
            "natural_key": natural_key_digests(table, entity),
        }
    )


def test_change_set_carries_school_and_natural_key_from_the_delivery_for_upserts_and_the_state_for_deactivations():
    yesterday = table_of(
        "users",
        {"sourcedId": "u1", "username": "ann", "orgSourcedIds": "s1", "givenName": "A"},
        {"sourcedId": "u2", "username": "bob", "orgSourcedIds": "s2"},
    )
    today = table_of(
        "users",
        {"sourcedId": "u1", "username": "ann", "orgSourcedIds": "s3", "givenName": "A"},  # moved school
        {"sourcedId": "u9", "username": "bob", "orgSourcedIds": "s2"},  # re-keyed
    )
    changes = build_change_set({"users": today}, {"users": "bulk"}, {"users": full_state("users", yesterday)})
    assert list(changes.columns) == CHANGE_COLUMNS
    rows = changes.set_index("sourcedId")
    assert rows.loc["u1", ["op", "school", "natural_key"]].tolist() == ["update", "s3", digest("ann", "s3")]
    assert rows.loc["u9", ["op", "school", "natural_key"]].tolist() == ["create", "s2", digest("bob", "s2")]
    assert rows.loc["u2", ["op", "school", "natural_key", "record", "hash_after"]].tolist() == ["deactivate", "s2", digest("bob", "s2"), "", ""]
    assert rows.loc["u2", "hash_before"] == content_hash(yesterday.iloc[1].to_dict(), "users")


def test_a_state_as_the_ledger_loads_it_takes_deactivated_natural_keys_from_the_lookup():
    """load_state's shape: school categorical, no natural_key; the lookup is asked for deactivated ids only."""
    yesterday = table_of(
        "users",
        {"sourcedId": "u1", "username": "ann", "orgSourcedIds": "s1"},
        {"sourcedId": "u2", "username": "bob", "orgSourcedIds": "s2"},
        {"sourcedId": "u3", "username": "cy", "orgSourcedIds": "s2"},
    )
    today = table_of("users", {"sourcedId": "u1", "username": "ann", "orgSourcedIds": "s1", "givenName": "A"})
    full = full_state("users", yesterday)
    stored = dict(zip(full["sourcedId"], full["natural_key"])) | {"u3": "stale"}
    asked: list[tuple[str, list[str]]] = []

    def lookup(entity: str, ids: list[str]) -> dict[str, str]:
        asked.append((entity, sorted(ids)))
        return {sid: stored[sid] for sid in ids}

    loaded = full.drop(columns="natural_key").astype({"school": "category"})
    changes = build_change_set({"users": today}, {"users": "bulk"}, {"users": loaded}, lookup)
    expected = build_change_set({"users": today}, {"users": "bulk"}, {"users": full})
    assert changes.drop(columns="natural_key").equals(expected.drop(columns="natural_key"))
    assert changes.loc[changes["sourcedId"].eq("u2"), ["op", "school", "natural_key"]].values.tolist() == [["deactivate", "s2", digest("bob", "s2")]]
    assert changes.loc[changes["sourcedId"].eq("u3"), "natural_key"].tolist() == ["stale"]  # the stored digest, whatever it is
    assert asked == [("users", ["u2", "u3"])]


def test_a_state_stored_without_school_and_natural_key_reads_them_as_blank():
    state = full_state("orgs", org_table(DISTRICT, SCHOOL))[["sourcedId", "content_hash", "active"]]
    changes = build_change_set({"orgs": org_table(DISTRICT)}, {"orgs": "bulk"}, {"orgs": state})
    assert changes[["op", "sourcedId", "school", "natural_key"]].values.tolist() == [["deactivate", "0042", "", ""]]


def test_a_state_hash_that_is_not_a_hex_digest_means_the_record_is_updated():
    table = org_table(DISTRICT)
    state = pd.DataFrame({"sourcedId": ["d1"], "content_hash": ["h"], "active": [True]})
    changes = build_change_set({"orgs": table}, {"orgs": "bulk"}, {"orgs": state})
    assert changes[["op", "hash_before", "hash_after"]].values.tolist() == [["update", "h", content_hash(DISTRICT, "orgs")]]


def test_delta_removals_carry_their_line_and_leave_unknown_or_inactive_records_alone():
    state = pd.concat(
        [full_state("orgs", org_table(DISTRICT, SCHOOL)), full_state("orgs", org_table({"sourcedId": "s7", "name": "Old", "type": "school"}), active=False)],
        ignore_index=True,
    )
    delta = org_table(
        DISTRICT,  # unchanged: nothing
        SCHOOL | {"status": "TobeDeleted "},
        {"sourcedId": "s7", "name": "Old", "type": "school", "status": "tobedeleted"},  # already inactive
        {"sourcedId": "s8", "name": "Never", "type": "school", "status": "tobedeleted"},  # unknown
    )
    changes = build_change_set({"orgs": delta}, {"orgs": "delta"}, {"orgs": state})
    assert changes[["op", "sourcedId", "line", "school"]].values.tolist() == [["deactivate", "0042", 3, "0042"]]


def test_bulk_leaves_inactive_records_missing_from_the_file_alone():
    state = full_state("orgs", org_table(DISTRICT, SCHOOL), active=False)
    assert build_change_set({"orgs": org_table()}, {"orgs": "bulk"}, {"orgs": state}).empty


def test_change_set_equals_a_record_by_record_reference_on_a_random_night():
    """Compare the set-engine diff with the plain definition, record by record, on 3,000 enrollments."""
    rng = np.random.default_rng(7)
    people = [f"{n:07d}" for n in range(600)]

    def enrollment(number: int, end: str = "2027-06-30") -> dict[str, str]:
        return {
            "sourcedId": f"enr-{number:06d}", "classSourcedId": f"cls-{number % 97:03d}", "schoolSourcedId": f"org-{number % 5}",
            "userSourcedId": people[number % 600], "role": "student", "primary": "false", "endDate": end,
        }

    yesterday = [enrollment(n) for n in range(3000)]
    active = rng.random(3000) > 0.05
    today = [
        enrollment(n, end="2027-01-29") if edit else row
        for n, (row, edit, keep) in enumerate(zip(yesterday, rng.random(3000) < 0.1, rng.random(3000) > 0.1))
        if keep
    ] + [enrollment(n) for n in range(3000, 3100)]
    order = rng.permutation(len(today))
    today = [today[i] for i in order]
    state = full_state("enrollments", table_of("enrollments", *yesterday))
    state["active"] = active
    changes = build_change_set({"enrollments": table_of("enrollments", *today)}, {"enrollments": "bulk"}, {"enrollments": state})

    held = {row["sourcedId"]: (content_hash(row, "enrollments"), bool(a)) for row, a in zip(yesterday, active)}
    expected = []
    for line, row in enumerate(today, start=2):
        before = held.get(row["sourcedId"])
        after = content_hash(row, "enrollments")
        op = "create" if before is None else "reactivate" if not before[1] else "update" if before[0] != after else None
        if op:
            expected.append([op, row["sourcedId"], line, before[0] if before else "", after, lms_record(row, "enrollments")])
    delivered = {row["sourcedId"] for row in today}
    for row, a in zip(yesterday, active):
        if a and row["sourcedId"] not in delivered:
            expected.append(["deactivate", row["sourcedId"], 0, content_hash(row, "enrollments"), "", None])
    found = [
        [c.op, c.sourcedId, c.line, c.hash_before, c.hash_after, json.loads(c.record) if c.record else None]
        for c in changes.itertuples()
    ]
    assert found == expected
    assert changes["seq"].tolist() == list(range(len(changes)))
    assert set(payload_columns("enrollments")) == set(json.loads(changes["record"].iloc[0]))
