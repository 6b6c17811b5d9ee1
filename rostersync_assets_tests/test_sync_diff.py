"""The change set: what travels to the LMS for bulk, delta and absent files (pure, no Dagster)."""

import pandas as pd
import pytest

from rostersync_assets.oneroster.spec import SPECS
from rostersync_assets.sync.diff import build_change_set, change_counts, empty_state
from rostersync_assets.sync.payloads import content_hash, lms_record, records_json, table_hashes


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


def test_change_counts_report_deactivated_share():
    state = state_of(org_table(DISTRICT, SCHOOL))
    changes = build_change_set({"orgs": org_table(DISTRICT)}, {"orgs": "bulk"}, {"orgs": state})
    counts = {c.entity: c for c in change_counts(changes, {"orgs": state})}
    assert counts["orgs"].deactivate == 1 and counts["orgs"].active_before == 2
    assert counts["orgs"].deactivated_share == pytest.approx(0.5)
    assert counts["users"].active_before == 0 and counts["users"].deactivated_share == 0.0


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
    import json

    assert json.loads(records_json(table, "orgs")[1]) == lms_record(SCHOOL, "orgs")


def test_empty_state_has_the_expected_columns():
    assert list(empty_state().columns) == ["sourcedId", "content_hash", "active"]
