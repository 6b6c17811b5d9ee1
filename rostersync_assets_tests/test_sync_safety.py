"""Safety rules on hand-built change sets and sync states (pure, no Dagster)."""

import hashlib

import pandas as pd
import pytest

from rostersync_assets.sandbox.generator import generate_district
from rostersync_assets.sync.diff import build_change_set
from rostersync_assets.sync.safety import (
    DEACTIVATION,
    ID_CHURN,
    UPDATE,
    PolicyError,
    SafetyPolicy,
    SafetyVerdict,
    evaluate,
)


def key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def state(entity_ids: dict[str, list[str]], prefix: str) -> pd.DataFrame:
    """Active records per school: {school: [ids]}; natural key = digest of the id's suffix."""
    rows = [(sid, "h", True, school, key(prefix, sid)) for school, ids in entity_ids.items() for sid in ids]
    return pd.DataFrame(rows, columns=["sourcedId", "content_hash", "active", "school", "natural_key"])


def changes(*rows: tuple[str, str, str, str, str]) -> pd.DataFrame:
    """Rows of (entity, op, sourcedId, school, natural_key) in apply order."""
    frame = pd.DataFrame(rows, columns=["entity", "op", "sourcedId", "school", "natural_key"])
    frame.insert(0, "seq", range(len(frame)))
    return frame


def users_in(schools: dict[str, int]) -> dict[str, list[str]]:
    return {school: [f"u-{school}-{i}" for i in range(n)] for school, n in schools.items()}


def deactivate_all(ids: dict[str, list[str]], entity: str = "users") -> list[tuple[str, str, str, str, str]]:
    return [(entity, "deactivate", sid, school, key(entity, sid)) for school, sids in ids.items() for sid in sids]


def test_a_normal_night_is_not_held_and_counts_per_entity_and_school():
    ids = users_in({"s1": 100, "s2": 100})
    night = changes(
        ("users", "create", "u-new", "s1", key("users", "u-new")),
        ("users", "update", "u-s1-0", "s1", key("users", "u-s1-0")),
        *deactivate_all({"s2": ids["s2"][:5]}),
    )
    verdict = evaluate(night, {"users": state(ids, "users")}, SafetyPolicy())
    assert not verdict.held
    users = next(c for c in verdict.entity_counts() if c.entity == "users")
    assert (users.active_before, users.create, users.update, users.deactivate) == (200, 1, 1, 5)
    by_school = {c.school: c for c in verdict.school_counts() if c.entity == "users"}
    assert (by_school["s1"].create, by_school["s1"].update, by_school["s2"].deactivate) == (1, 1, 5)
    assert by_school["s2"].active_before == 100


def test_an_empty_bulk_users_file_deactivates_everyone_and_is_held():
    # users.csv with its header only, in bulk mode: every active user is missing from the delivery
    ids = users_in({"s1": 30, "s2": 30})
    verdict = evaluate(changes(*deactivate_all(ids)), {"users": state(ids, "users")}, SafetyPolicy())
    held = verdict.holds_of(DEACTIVATION)
    assert [(h.entity, h.school, h.count, h.base) for h in held] == [("users", "", 60, 60), ("users", "s1", 30, 30), ("users", "s2", 30, 30)]
    assert held[0].share == 1.0 and held[0].limit == 0.10
    assert len(held[0].sample) == 10 and set(held[0].sample) <= set(ids["s1"] + ids["s2"])


def test_a_truncated_users_file_is_held_district_wide_and_in_the_school_it_cut():
    ids = users_in({"s1": 200, "s2": 200})
    cut = ids["s2"][150:]  # the file stopped three quarters of the way through
    verdict = evaluate(changes(*deactivate_all({"s2": cut})), {"users": state(ids, "users")}, SafetyPolicy())
    assert [(h.school, h.count, h.base) for h in verdict.holds_of(DEACTIVATION)] == [("", 50, 400), ("s2", 50, 200)]


def test_one_school_losing_its_students_is_held_even_when_the_district_share_is_small():
    ids = users_in({f"s{i}": 40 for i in range(20)})
    verdict = evaluate(changes(*deactivate_all({"s7": ids["s7"]})), {"users": state(ids, "users")}, SafetyPolicy())
    assert [(h.entity, h.school, h.count) for h in verdict.holds] == [("users", "s7", 40)]


def test_a_school_below_the_minimum_size_is_judged_district_wide_only():
    ids = users_in({"big": 400, "tiny": 3})
    night = changes(*deactivate_all({"tiny": ids["tiny"][:1]}))
    assert not evaluate(night, {"users": state(ids, "users")}, SafetyPolicy()).held
    strict = SafetyPolicy(min_school_size=0)
    assert [h.school for h in evaluate(night, {"users": state(ids, "users")}, strict).holds] == ["tiny"]


def test_mass_updates_are_held_above_the_update_share():
    ids = users_in({"s1": 100})
    updated = [("users", "update", sid, "s1", key("users", sid)) for sid in ids["s1"][:80]]
    verdict = evaluate(changes(*updated), {"users": state(ids, "users")}, SafetyPolicy())
    assert [(h.kind, h.school, h.count) for h in verdict.holds] == [(UPDATE, "", 80), (UPDATE, "s1", 80)]
    assert not evaluate(changes(*updated[:75]), {"users": state(ids, "users")}, SafetyPolicy()).held


def test_a_re_keyed_class_table_is_held_as_id_churn_with_old_and_new_ids():
    old = {"s1": [f"cls-{i}" for i in range(50)]}
    gone = [("classes", "deactivate", sid, "s1", key("classes", sid)) for sid in old["s1"]]
    born = [("classes", "create", f"new-{sid}", "s1", key("classes", sid)) for sid in old["s1"]]
    verdict = evaluate(changes(*born, *gone), {"classes": state(old, "classes")}, SafetyPolicy())
    churn = verdict.holds_of(ID_CHURN)
    assert [(h.entity, h.count, h.base) for h in churn] == [("classes", 50, 50)]
    assert churn[0].sample[0] == "cls-0->new-cls-0"
    assert {h.kind for h in verdict.holds} == {DEACTIVATION, ID_CHURN}


def test_id_churn_within_the_tolerance_passes_and_unrelated_keys_are_no_churn():
    ids = users_in({"s1": 300})
    one = changes(
        ("users", "deactivate", "u-s1-0", "s1", key("users", "u-s1-0")),
        ("users", "create", "u-rekeyed", "s1", key("users", "u-s1-0")),  # 1 of 300 = 0.3 % <= 1 %
        ("users", "create", "u-other", "s1", key("users", "someone-else")),
        ("users", "create", "u-nokey", "s1", ""),
    )
    verdict = evaluate(one, {"users": state(ids, "users")}, SafetyPolicy())
    assert not verdict.held
    assert next(c for c in verdict.entity_counts() if c.entity == "users").id_churn == 1
    assert [h.kind for h in evaluate(one, {"users": state(ids, "users")}, SafetyPolicy(max_id_churn=0.0)).holds] == [ID_CHURN]


def test_a_first_sync_is_never_held_and_an_empty_change_set_is_fine():
    born = changes(*[("users", "create", f"u{i}", "s1", key("users", str(i))) for i in range(50)])
    assert not evaluate(born, {}, SafetyPolicy()).held
    assert not evaluate(changes(), {"users": state(users_in({"s1": 5}), "users")}, SafetyPolicy()).held


def test_inactive_state_records_are_not_part_of_the_base():
    frame = state(users_in({"s1": 30}), "users")
    frame.loc[frame.index[:20], "active"] = False
    night = changes(*[("users", "deactivate", sid, "s1", "") for sid in frame["sourcedId"][20:22]])
    held = evaluate(night, {"users": frame}, SafetyPolicy()).holds_of(DEACTIVATION)
    assert [(h.school, h.count, h.base) for h in held] == [("", 2, 10)]  # s1 has 10 active: below 20


def test_a_state_with_categorical_schools_as_the_ledger_loads_it_is_judged_the_same():
    ids = users_in({"s1": 30, "s2": 40, "s3": 25})
    night = changes(*deactivate_all({"s2": ids["s2"][:10]}), ("users", "create", "u-new", "s1", key("users", "new")))
    plain = state(ids, "users").drop(columns="natural_key")
    plain.loc[plain["school"].eq("s3"), "active"] = False  # s3 stays a category with no active record
    plain.loc[plain.index[:2], "school"] = None  # no school: counted district-wide only
    loaded = plain.astype({"school": "category"})
    assert evaluate(night, {"users": loaded}, SafetyPolicy()) == evaluate(night, {"users": plain}, SafetyPolicy())
    counts = {c.school: c.active_before for c in evaluate(night, {"users": loaded}, SafetyPolicy()).counts if c.entity == "users"}
    assert counts == {"": 70, "s1": 28, "s2": 40}


def test_the_verdict_round_trips_through_json_and_carries_no_record_contents():
    ids = users_in({"s1": 30})
    verdict = evaluate(changes(*deactivate_all(ids)), {"users": state(ids, "users")}, SafetyPolicy())
    assert SafetyVerdict.from_dict(verdict.to_dict()) == verdict
    assert "users district-wide: 30 of 30 active record(s) deactivated (100.0% > 10%)" in verdict.summary()


def test_policy_from_mapping_validates_every_field():
    policy = SafetyPolicy.from_mapping({"mode": "preview", "max_deactivated_share": 0.2, "min_school_size": 5, "max_id_churn": 0})
    assert policy.preview and policy.max_deactivated_share == 0.2 and policy.max_id_churn == 0.0
    assert policy.changed_fields() == {"mode": "preview", "max_deactivated_share": 0.2, "min_school_size": 5, "max_id_churn": 0.0}
    assert SafetyPolicy.from_mapping(None) == SafetyPolicy()
    for raw, message in (
        ({"mode": "dry-run"}, "mode 'dry-run' is not one of sync, preview"),
        ({"max_deactivated_share": 10}, "max_deactivated_share 10 must be a share between 0 and 1"),
        ({"max_updated_share": "75%"}, "max_updated_share '75%' must be a share"),
        ({"max_id_churn": True}, "max_id_churn True must be a share"),
        ({"min_school_size": -1}, "min_school_size -1 must be a whole number"),
        ({"max_delete_share": 0.1}, "unknown field(s) max_delete_share"),
        (["sync"], "must be a mapping"),
    ):
        with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
            SafetyPolicy.from_mapping(raw)


def synced_states(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The sync state after the LMS acknowledged every record of `tables` (built by the real diff)."""
    created = build_change_set(tables, {e: "bulk" for e in tables}, {})
    return {
        entity: pd.DataFrame({
            "sourcedId": rows["sourcedId"], "content_hash": rows["hash_after"], "active": True,
            "school": rows["school"], "natural_key": rows["natural_key"],
        })
        for entity, rows in created.groupby("entity")
    }


@pytest.mark.parametrize("kept", [0, 150], ids=["header-only users.csv", "truncated users.csv"])
def test_an_empty_or_truncated_bulk_users_file_through_the_real_diff_is_held(kept):
    roster = generate_district(students=300, seed=5, district="lincoln-usd")
    users = roster.tables["users"].copy()
    users["_line"] = range(2, len(users) + 2)
    states = synced_states({"users": users})
    cut = users.iloc[:kept]  # kept == 0: the file's header only, declared bulk
    verdict = evaluate(build_change_set({"users": cut}, {"users": "bulk"}, states), states, SafetyPolicy())
    district = verdict.holds_of(DEACTIVATION)[0]
    assert (district.entity, district.school, district.count, district.base) == ("users", "", len(users) - kept, len(users))
    assert all(h.kind == DEACTIVATION and h.entity == "users" for h in verdict.holds)
    if kept == 0:  # every school big enough to be judged on its own lost everyone
        sizes = states["users"]["school"].value_counts()
        assert {h.school for h in verdict.holds} == {""} | set(sizes[sizes >= 20].index)
