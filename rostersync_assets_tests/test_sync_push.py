"""Batches and the push loop: order, batch boundaries, idempotency keys, stop on failure (pure)."""

import pandas as pd
import pytest

from rostersync_assets.sync.push import plan_batches, push_changes


def changes(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "seq": range(len(rows)),
            "entity": [r[0] for r in rows],
            "op": [r[1] for r in rows],
            "sourcedId": [r[2] for r in rows],
            "line": 2,
            "hash_before": "",
            "hash_after": [f"h-{r[2]}" for r in rows],
            "record": ['{"sourcedId": "%s"}' % r[2] if r[1] != "deactivate" else "" for r in rows],
        }
    )


ROWS = [("orgs", "create", "o1"), ("users", "create", "u1"), ("users", "update", "u2"), ("users", "create", "u3"), ("users", "deactivate", "u9")]


def test_batches_split_by_entity_operation_kind_and_size():
    batches = list(plan_batches(changes(ROWS), district="d", delivery_id="x", batch_size=2))
    assert [(b.entity, [c.sourced_id for c in b.changes]) for b in batches] == [
        ("orgs", ["o1"]),
        ("users", ["u1", "u2"]),
        ("users", ["u3"]),
        ("users", ["u9"]),
    ]
    assert [b.number for b in batches] == [0, 1, 2, 3]
    assert batches[1].changes[0].record == {"sourcedId": "u1"}
    assert batches[3].changes[0].lms_op == "deactivate" and batches[3].changes[0].record is None


def test_idempotency_keys_are_stable_per_delivery_and_differ_otherwise():
    first = [b.idempotency_key for b in plan_batches(changes(ROWS), district="d", delivery_id="x")]
    again = [b.idempotency_key for b in plan_batches(changes(ROWS), district="d", delivery_id="x")]
    other_delivery = [b.idempotency_key for b in plan_batches(changes(ROWS), district="d", delivery_id="y")]
    assert first == again
    assert len(set(first)) == len(first)
    assert not set(first) & set(other_delivery)


def test_push_records_each_batch_before_sending_the_next_and_stops_on_error():
    log: list[str] = []

    def send(batch):
        log.append(f"send {batch.number}")
        if batch.number == 2:
            raise RuntimeError("LMS down")
        return [("created", None)] * len(batch.changes)

    def record(batch, statuses):
        log.append(f"record {batch.number}")

    with pytest.raises(RuntimeError):
        push_changes(plan_batches(changes(ROWS), district="d", delivery_id="x", batch_size=2), send=send, record=record)
    assert log == ["send 0", "record 0", "send 1", "record 1", "send 2"]


def test_summary_counts_statuses_per_entity():
    def send(batch):
        return [("error", "rejected") if c.sourced_id == "u2" else ("created", None) for c in batch.changes]

    summary = push_changes(plan_batches(changes(ROWS[:3]), district="d", delivery_id="x"), send=send, record=lambda b, s: None)
    assert summary.batches == 2
    assert summary.total("created") == 2 and summary.failed == 1
    assert summary.by_entity["users"]["error"] == 1


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError):
        list(plan_batches(changes(ROWS), district="d", delivery_id="x", batch_size=0))
