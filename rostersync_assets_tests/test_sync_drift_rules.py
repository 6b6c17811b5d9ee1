"""Drift between sync state, live LMS and delivery: kinds, conflicts, samples, privacy (pure, no Dagster)."""

import json

import pandas as pd
import pytest

from rostersync_assets.sandbox.generator import generate_district
from rostersync_assets.sync.diff import build_change_set
from rostersync_assets.sync.drift import (
    DRIFT_KINDS,
    SAMPLE_SIZE,
    DriftReport,
    delivery_side,
    entity_drift,
    lms_side,
)
from rostersync_assets.sync.payloads import records_json, table_hashes

USERS = generate_district(students=40, seed=4, district="drift-usd").tables["users"]
NO_CHANGES = pd.DataFrame({"sourcedId": pd.Series(dtype=str), "content_hash": pd.Series(dtype=str), "active": pd.Series(dtype=bool)})


def synced_state(table: pd.DataFrame = USERS) -> pd.DataFrame:
    """The sync state after the LMS acknowledged every row of `table`."""
    hashes = table_hashes(table, "users")
    return pd.DataFrame({"sourcedId": hashes["sourcedId"], "content_hash": hashes["content_hash"], "active": True})


def lms_listing(table: pd.DataFrame = USERS) -> dict[str, dict]:
    """What the LMS lists after the sync sent `table`: the records as sent, plus `active`, by sourcedId."""
    return {r["sourcedId"]: r | {"active": True} for r in map(json.loads, records_json(table, "users"))}


def drift(listing: dict[str, dict], state: pd.DataFrame | None = None, delivery: pd.DataFrame = NO_CHANGES, **kw):
    ordered = [listing[sid] for sid in sorted(listing)]
    return entity_drift("users", synced_state() if state is None else state, lms_side(iter(ordered), "users"), delivery, **kw)


def ids(n: int) -> list[str]:
    return list(USERS["sourcedId"].iloc[:n])


def test_a_freshly_synced_lms_hashes_like_the_sync_and_shows_no_drift():
    result = drift(lms_listing())
    assert result.drifted == 0 and result.conflicted == 0
    assert result.state_active == result.lms_active == len(USERS)
    assert result.delivery_changes == 0


def test_each_kind_of_lms_side_edit_is_counted_and_named():
    state = synced_state()
    a, b, c, d, e = ids(5)
    state.loc[state["sourcedId"] == c, "active"] = False  # rostersync deactivated c earlier
    listing = lms_listing()
    listing[a] = listing[a] | {"grades": "12"}  # edited in the LMS
    listing[b] = listing[b] | {"active": False}  # deactivated in the LMS
    listing[c] = listing[c] | {"active": True}  # reactivated in the LMS
    listing["usr-lms-only"] = {"sourcedId": "usr-lms-only", "role": "teacher", "active": True}
    listing["usr-lms-inactive"] = {"sourcedId": "usr-lms-inactive", "role": "teacher", "active": False}
    del listing[d]  # purged from the LMS
    result = drift(listing, state)
    assert result.counts == {
        "changed_in_lms": 1, "deactivated_in_lms": 1, "reactivated_in_lms": 1, "added_in_lms": 1, "missing_in_lms": 1
    }
    assert result.samples == {
        "changed_in_lms": (a,), "deactivated_in_lms": (b,), "reactivated_in_lms": (c,),
        "added_in_lms": ("usr-lms-only",), "missing_in_lms": (d,),
    }
    assert result.conflicted == 0
    assert result.lms_active == len(USERS) + 1 - 1 - 1  # + reactivated c + added, - deactivated b, - purged d


def test_a_purged_inactive_record_and_an_inactive_edit_are_not_drift():
    state = synced_state()
    a, b = ids(2)
    state.loc[state["sourcedId"].isin([a, b]), "active"] = False
    listing = lms_listing()
    del listing[a]  # the LMS purged a record rostersync had deactivated
    listing[b] = listing[b] | {"active": False, "grades": "12"}  # hidden either way
    assert drift(listing, state).drifted == 0


def test_the_delivery_decides_between_reported_conflict_and_converged():
    edited, dropped_both, dropped_lms, added_both, added_lms_other = ids(5)
    tonight = USERS.copy()
    tonight.loc[tonight["sourcedId"] == edited, "grades"] = "11"  # the district changes it too, differently
    tonight = tonight[tonight["sourcedId"] != dropped_both]  # the district drops it too
    new_row = USERS.iloc[[0]].assign(sourcedId="usr-new")
    tonight = pd.concat([tonight, new_row], ignore_index=True)
    tonight["_line"] = range(2, len(tonight) + 2)
    changes = build_change_set({"users": tonight}, {"users": "bulk"}, {"users": synced_state()})
    listing = lms_listing()
    listing[edited] = listing[edited] | {"grades": "12"}
    listing[dropped_both] = listing[dropped_both] | {"active": False}
    listing[dropped_lms] = listing[dropped_lms] | {"active": False}
    listing["usr-new"] = json.loads(records_json(new_row, "users")[0]) | {"active": True}  # same record: converged
    listing["usr-lms-only"] = {"sourcedId": "usr-lms-only", "role": "teacher", "active": True}
    result = drift(listing, delivery=delivery_side(changes, "users"))
    assert result.delivery_changes == 3  # update, deactivate, create
    assert result.counts["changed_in_lms"] == 1 and result.conflicts["changed_in_lms"] == 1
    assert result.conflict_samples["changed_in_lms"] == (edited,)
    assert result.counts["deactivated_in_lms"] == 2 and result.conflicts["deactivated_in_lms"] == 0
    assert result.counts["added_in_lms"] == 2 and result.conflicts["added_in_lms"] == 0


def test_the_delivery_recreating_a_record_the_lms_lost_is_a_conflict_and_an_lms_add_it_overwrites_too():
    lost, = ids(1)
    tonight = pd.concat([USERS, USERS.iloc[[1]].assign(sourcedId="usr-taken")], ignore_index=True)
    state = synced_state()
    state.loc[state["sourcedId"] == lost, "content_hash"] = "stale"  # the delivery updates it
    changes = build_change_set({"users": tonight.assign(_line=range(2, len(tonight) + 2))}, {"users": "bulk"}, {"users": state})
    listing = lms_listing()
    del listing[lost]
    listing["usr-taken"] = {"sourcedId": "usr-taken", "role": "aide", "active": True}  # the same id, made in the LMS
    result = drift(listing, state, delivery_side(changes, "users"))
    assert result.conflict_samples["missing_in_lms"] == (lost,)
    assert result.conflict_samples["added_in_lms"] == ("usr-taken",)


def test_an_already_applied_change_set_no_longer_conflicts():
    edited, = ids(1)
    tonight = USERS.copy()
    tonight.loc[tonight["sourcedId"] == edited, "grades"] = "11"
    changes = build_change_set({"users": tonight.assign(_line=range(2, len(tonight) + 2))}, {"users": "bulk"}, {"users": synced_state()})
    listing = lms_listing(tonight)
    listing[edited] = listing[edited] | {"grades": "12"}  # edited in the LMS after the sync wrote 11
    result = drift(listing, synced_state(tonight), delivery_side(changes, "users"))
    assert result.counts["changed_in_lms"] == 1 and result.conflicted == 0 and result.delivery_changes == 0


def test_samples_hold_the_ten_smallest_ids_and_counts_stay_exact_whatever_the_chunking():
    listing = lms_listing()
    for n in range(25):
        listing[f"usr-x{n:02d}"] = {"sourcedId": f"usr-x{n:02d}", "role": "teacher", "active": True}
    results = [drift(listing, chunk_size=size) for size in (1, 7, 1000)]
    assert all(r == results[0] for r in results)
    assert results[0].counts["added_in_lms"] == 25
    assert results[0].samples["added_in_lms"] == tuple(f"usr-x{n:02d}" for n in range(SAMPLE_SIZE))
    with pytest.raises(ValueError, match="chunk_size"):
        drift(listing, chunk_size=0)


def test_the_listing_is_consumed_lazily_one_chunk_at_a_time():
    listing = lms_listing()
    pulled = []

    def records():
        for sid in sorted(listing):
            pulled.append(sid)
            yield listing[sid]

    rows = lms_side(records(), "users")
    assert pulled == []  # nothing is read before the comparison asks for it
    result = entity_drift("users", synced_state(), rows, NO_CHANGES, chunk_size=10)
    assert len(pulled) == len(USERS) and result.drifted == 0


def test_delivery_side_is_the_state_after_the_change_set_is_applied():
    changes = pd.DataFrame(
        {
            "entity": ["users", "users", "users", "orgs"],
            "op": ["create", "reactivate", "deactivate", "update"],
            "sourcedId": ["u1", "u2", "u3", "o1"],
            "hash_before": ["", "h2", "h3", "h4"],
            "hash_after": ["n1", "n2", "", "n4"],
        }
    )
    side = delivery_side(changes, "users")
    assert side.values.tolist() == [["u1", "n1", True], ["u2", "n2", True], ["u3", "h3", False]]


def test_report_tables_count_per_entity_and_kind_and_hold_no_record_content():
    a, = ids(1)
    listing = lms_listing()
    listing[a] = listing[a] | {"givenName": "Zebulon", "email": "zebulon@example.org"}
    report = DriftReport((drift(listing),))
    assert report.drifted == report.total("changed_in_lms") == 1
    by_entity = report.by_entity_markdown()
    assert by_entity.splitlines()[0].count("|") == by_entity.splitlines()[1].count("|")
    assert f"| users | {len(USERS)} | {len(USERS)} | 0 | 1 | 0 | 0 | 0 | 0 | 0 |" in by_entity
    assert f"| users | changed_in_lms | 1 | {a} | - |" in report.samples_markdown()
    text = by_entity + report.samples_markdown() + "".join(report.conflict_lines())
    personal = set(USERS[["givenName", "familyName", "email", "username"]].to_numpy().ravel()) | {"Zebulon", "zebulon@example.org"}
    assert not [value for value in personal if value and value in text]
    assert DriftReport((drift(lms_listing()),)).samples_markdown() == "no drift"
    assert set(DRIFT_KINDS) <= set(by_entity.split(" | "))
