"""Batches and the push loop: order, batch boundaries, idempotency keys that survive a resumed run,
bounded concurrency that keeps parents first, failures that keep acknowledged work, and the loop
against the sandbox LMS over HTTP with every switchable fault on."""

import threading
import time
from collections import Counter

import pandas as pd
import pytest

from rostersync_assets.connectors.ledger import BatchContext, SyncLedger
from rostersync_assets.connectors.lms_client import LmsClient, LmsOperation
from rostersync_assets.sandbox.generator import generate_district
from rostersync_assets.sandbox.lms_app import SandboxFaults
from rostersync_assets.sync.push import BatchAnswer, PlannedBatch, plan_batches, push_changes
from rostersync_assets_tests.fixtures.lms import SandboxLms, SandboxLmsFactory
from rostersync_assets_tests.fixtures.pipeline import SLUG
from rostersync_assets_tests.fixtures.pipeline import TENANT as SYNC_TENANT


def changes(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "seq": range(len(rows)),
            "entity": [r[0] for r in rows],
            "op": [r[1] for r in rows],
            "sourcedId": [r[2] for r in rows],
            "source_file": [f"{r[0]}.csv" for r in rows],
            "line": [0 if r[1] == "deactivate" else 2 + n for n, r in enumerate(rows)],
            "hash_before": "",
            "hash_after": [f"h-{r[2]}" for r in rows],
            "record": ['{"sourcedId": "%s"}' % r[2] if r[1] != "deactivate" else "" for r in rows],
            "school": "",
            "natural_key": "",
        }
    )


ROWS = [("orgs", "create", "o1"), ("users", "create", "u1"), ("users", "update", "u2"), ("users", "create", "u3"), ("users", "deactivate", "u9")]


def created(batch: PlannedBatch) -> BatchAnswer:
    return BatchAnswer([("created", None)] * len(batch.changes))


def test_batches_split_by_entity_operation_kind_and_size():
    batches = list(plan_batches(changes(ROWS), district="d", delivery_id="x", batch_size=2))
    assert [(b.entity, [c.sourced_id for c in b.changes]) for b in batches] == [
        ("orgs", ["o1"]),
        ("users", ["u1", "u2"]),
        ("users", ["u3"]),
        ("users", ["u9"]),
    ]
    assert [b.number for b in batches] == [0, 1, 2, 3]
    assert batches[1].changes[0].record == '{"sourcedId": "u1"}'  # the diff's JSON text, carried as is
    assert batches[3].changes[0].lms_op == "deactivate" and batches[3].changes[0].record is None


def test_idempotency_keys_are_stable_per_delivery_and_differ_otherwise():
    first = [b.idempotency_key for b in plan_batches(changes(ROWS), district="d", delivery_id="x")]
    again = [b.idempotency_key for b in plan_batches(changes(ROWS), district="d", delivery_id="x")]
    other_delivery = [b.idempotency_key for b in plan_batches(changes(ROWS), district="d", delivery_id="y")]
    assert first == again
    assert len(set(first)) == len(first)
    assert not set(first) & set(other_delivery)


def test_a_resumed_run_cuts_the_unacknowledged_batches_with_their_old_keys():
    rows = [("users", "create", f"u{n:02d}") for n in range(10)] + [("users", "deactivate", f"x{n}") for n in range(5)]
    full = list(plan_batches(changes(rows), district="d", delivery_id="x", batch_size=3))
    acknowledged = {c.sourced_id for b in (full[0], full[2], full[5]) for c in b.changes}  # any whole batches
    rest = changes(rows)
    rest = rest[~rest["sourcedId"].isin(acknowledged)]
    # the sync state may come back in any order: deactivations are re-sorted by id
    rest = pd.concat([rest[rest["op"] != "deactivate"], rest[rest["op"] == "deactivate"].iloc[::-1]])
    resumed = list(plan_batches(rest, district="d", delivery_id="x", batch_size=3))
    remaining = [b for n, b in enumerate(full) if n not in (0, 2, 5)]
    assert [b.idempotency_key for b in resumed] == [b.idempotency_key for b in remaining]
    assert [b.changes for b in resumed] == [b.changes for b in remaining]


def test_push_records_each_group_before_sending_the_next_and_stops_on_error():
    log: list[str] = []

    def send(batch):
        log.append(f"send {batch.number}")
        if batch.number == 2:
            raise RuntimeError("LMS down")
        return created(batch)

    def record(exchanges):
        log.extend(f"record {batch.number}" for batch, _ in exchanges)

    with pytest.raises(RuntimeError):
        push_changes(plan_batches(changes(ROWS), district="d", delivery_id="x", batch_size=2), send=send, record=record)
    # Batches 1 and 2 are one group: 2 may be sent while 1 is being recorded; 3 (deactivations) never goes.
    assert log[:3] == ["send 0", "record 0", "send 1"]
    assert sorted(log[3:]) == ["record 1", "send 2"]


def test_the_next_batch_of_a_group_is_sent_while_the_last_answer_is_recorded():
    rows = [("users", "create", f"u{n}") for n in range(6)]
    next_sent = {number: threading.Event() for number in range(3)}

    def send(batch):
        next_sent[batch.number].set()
        return created(batch)

    def record(exchanges):
        [(batch, _)] = exchanges  # one in flight at a time: one batch per write
        if batch.number < 2:  # the LMS already works on the next batch while this one is written
            assert next_sent[batch.number + 1].wait(timeout=5)

    summary = push_changes(plan_batches(changes(rows), district="d", delivery_id="x", batch_size=2), send=send, record=record)

    assert summary.batches == 3


def test_batches_answered_while_the_ledger_writes_are_recorded_together_in_one_write():
    rows = [("users", "create", f"u{n}") for n in range(6)]
    release, answered = threading.Event(), threading.Semaphore(0)

    def send(batch):
        if batch.number > 0:  # answered only once the first batch's write has begun
            assert release.wait(timeout=5)
            answered.release()
        return created(batch)

    writes = []

    def record(exchanges):
        writes.append([batch.number for batch, _ in exchanges])
        if len(writes) == 1:  # a slow ledger: both other batches are answered meanwhile
            release.set()
            assert answered.acquire(timeout=5) and answered.acquire(timeout=5)
            time.sleep(0.2)  # and their futures are done before the loop looks again

    summary = push_changes(plan_batches(changes(rows), district="d", delivery_id="x", batch_size=2), send=send, record=record, concurrency=3)

    assert writes == [[0], [1, 2]] or writes == [[0], [2, 1]]
    assert summary.batches == 3 and summary.total("created") == 6


def test_concurrent_batches_stay_within_the_bound_and_groups_go_parents_first():
    rows = [("orgs", "create", f"o{n}") for n in range(7)] + [("users", "create", f"u{n}") for n in range(9)]
    rows += [("users", "deactivate", f"x{n}") for n in range(5)]
    lock, in_flight, peak, events = threading.Lock(), [0], [0], []

    def send(batch):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            events.append(("send", batch.entity, batch.changes[0].lms_op))
        time.sleep(0.02 if batch.number % 2 else 0.05)  # out-of-order completion within a group
        with lock:
            in_flight[0] -= 1
        return created(batch)

    writers = set()

    def record(exchanges):
        writers.add(threading.current_thread().name)  # the ledger is written from one thread, one write at a time
        events.extend(("record", batch.entity, batch.changes[0].lms_op) for batch, _ in exchanges)

    summary = push_changes(plan_batches(changes(rows), district="d", delivery_id="x", batch_size=2), send=send, record=record, concurrency=3)

    assert peak[0] == 3 and summary.batches == 4 + 5 + 3 and summary.total("created") == len(rows)
    assert len(writers) == 1 and threading.main_thread().name not in writers
    groups = [("orgs", "upsert"), ("users", "upsert"), ("users", "deactivate")]
    for earlier, later in zip(groups, groups[1:]):
        last_record = max(i for i, e in enumerate(events) if e == ("record", *earlier))
        first_send = min(i for i, e in enumerate(events) if e == ("send", *later))
        assert last_record < first_send, (earlier, later)


def test_a_failure_stops_sending_but_records_the_batches_already_in_flight():
    rows = [("users", "create", f"u{n}") for n in range(12)]
    sent, recorded = [], []

    def send(batch):
        sent.append(batch.number)
        if batch.number == 0:
            time.sleep(0.05)
            raise RuntimeError("gave up")
        time.sleep(0.1)
        return created(batch)

    with pytest.raises(RuntimeError, match="gave up"):
        push_changes(
            plan_batches(changes(rows), district="d", delivery_id="x", batch_size=2),
            send=send,
            record=lambda exchanges: recorded.extend(b.number for b, _ in exchanges),
            concurrency=3,
        )
    assert sorted(sent) == [0, 1, 2] and sorted(recorded) == [1, 2]


def test_a_failed_ledger_write_stops_sending_and_is_raised():
    rows = [("users", "create", f"u{n}") for n in range(10)]
    sent, written = [], []

    def send(batch):
        sent.append(batch.number)
        return created(batch)

    def record(exchanges):
        if any(batch.number == 1 for batch, _ in exchanges):
            raise RuntimeError("ledger down")
        written.extend(batch.number for batch, _ in exchanges)

    with pytest.raises(RuntimeError, match="ledger down"):
        push_changes(plan_batches(changes(rows), district="d", delivery_id="x", batch_size=2), send=send, record=record)
    # 2 was sent while 1 was being written (one answered batch may wait for the ledger), then nothing more
    assert written == [0] and sent == [0, 1, 2]


def test_stale_errors_in_a_replayed_answer_are_sent_again_under_a_derived_key():
    rows = [("users", "create", f"u{n}") for n in range(3)]
    [batch] = plan_batches(changes(rows), district="d", delivery_id="x")
    exchanges: list[tuple[str, list[str]]] = []

    def send(sent):
        exchanges.append((sent.idempotency_key, [c.sourced_id for c in sent.changes]))
        if sent.idempotency_key == batch.idempotency_key:  # applied by a killed run, u1 rejected then
            return BatchAnswer([("created", None), ("error", "rejected"), ("created", None)], replayed=True)
        return created(sent)

    recorded = []
    summary = push_changes([batch], send=send, record=lambda exchanges: recorded.extend((b.idempotency_key, s) for b, s in exchanges))

    key = batch.idempotency_key
    assert exchanges == [(key, ["u0", "u1", "u2"]), (f"{key}.1", ["u1"])]
    assert [k for k, _ in recorded] == [key, f"{key}.1"]
    assert summary.total("created") == 3 and summary.failed == 0


def test_summary_counts_statuses_per_entity_and_samples_rejected_ids():
    def send(batch):
        return BatchAnswer([("error", "rejected") if c.sourced_id == "u2" else ("created", None) for c in batch.changes])

    summary = push_changes(plan_batches(changes(ROWS[:3]), district="d", delivery_id="x"), send=send, record=lambda exchanges: None)
    assert summary.batches == 2
    assert summary.total("created") == 2 and summary.failed == 1
    assert summary.by_entity["users"]["error"] == 1
    assert summary.rejected_sample == [("users", "u2", "rejected")]


def test_batch_size_and_concurrency_must_be_positive():
    with pytest.raises(ValueError):
        list(plan_batches(changes(ROWS), district="d", delivery_id="x", batch_size=0))
    with pytest.raises(ValueError):
        push_changes([], send=created, record=lambda exchanges: None, concurrency=0)


# --- against the sandbox LMS over HTTP, with the real client and ledger --------------------------------

TENANT = "lincoln"


def delivery(count: int) -> pd.DataFrame:
    rows = [("orgs", "create", "org-1")] + [("users", "create", f"u{n:04d}") for n in range(count)]
    frame = changes(rows)
    frame["record"] = [
        '{"sourcedId": "%s", "role": "student", "givenName": "G%s"}' % (sid, sid) if entity == "users" else '{"sourcedId": "%s", "type": "school"}' % sid
        for entity, sid in zip(frame["entity"], frame["sourcedId"])
    ]
    return frame


def sync(lms: SandboxLms, ledger: SyncLedger, frame: pd.DataFrame, *, run_id: str, timeout_s: float = 5.0):
    """The `lms_sync_results` loop without Dagster: plan, send over HTTP, record in the ledger."""
    with LmsClient(lms.url, lms.token, timeout_s=timeout_s, max_attempts=12, backoff_base_s=0.01, backoff_max_s=0.05) as client:

        def send(batch):
            operations = [LmsOperation(c.lms_op, c.sourced_id, c.record) for c in batch.changes]
            results = client.send_batch(TENANT, batch.entity, operations, batch.idempotency_key)
            return BatchAnswer([(r.status, r.error) for r in results], replayed=results.replayed)

        def record(exchanges):
            ledger.record_batches([
                (BatchContext(run_id=run_id, district="lincoln-usd", delivery_id="d1", archive_uri="", entity=batch.entity,
                              idempotency_key=batch.idempotency_key), batch.changes, statuses)
                for batch, statuses in exchanges
            ])

        return push_changes(plan_batches(frame, district="lincoln-usd", delivery_id="d1", batch_size=25), send=send, record=record, concurrency=4)


def unacknowledged(ledger: SyncLedger, frame: pd.DataFrame) -> pd.DataFrame:
    """What the next run's diff would send again: the records the sync state does not hold."""
    held = {sid for entity in ("orgs", "users") for sid in ledger.load_state("lincoln-usd", entity)["sourcedId"]}
    return frame[~frame["sourcedId"].isin(held)]


def applications_per_record(lms: SandboxLms) -> Counter:
    """How many applied batches carried each record (a replay adds nothing): must be 1 each."""
    return Counter((row.entity, result["sourcedId"]) for row in lms.store.idempotency_log() for result in row.response["results"] if result["status"] != "error")


def test_5xx_429_timeouts_and_dropped_connections_are_survived_and_nothing_is_applied_twice(
    sandbox_lms_factory: SandboxLmsFactory, tmp_path
):
    faults = SandboxFaults(
        error_share=0.15, throttle_share=0.1, drop_before_share=0.1, drop_after_share=0.15,
        stall_share=0.1, stall_s=0.4, retry_after_s=0, seed=7, throttle_first_batches=1,
    )
    lms = sandbox_lms_factory(faults=faults)
    frame = delivery(300)
    ledger = SyncLedger(tmp_path / "ledger.db")

    summary = sync(lms, ledger, frame, run_id="r1", timeout_s=0.3)

    assert set(faults.injected) == {"503", "429", "drop before applying", "drop after applying", "stall"}
    assert summary.failed == 0 and summary.total("created") == 301
    assert set(lms.store.active_records(TENANT, "users")) == {f"u{n:04d}" for n in range(300)}
    assert unacknowledged(ledger, frame).empty
    assert set(applications_per_record(lms).values()) == {1}
    assert any(row.times_seen > 1 for row in lms.store.idempotency_log())  # answers were lost and replayed


def test_rejected_records_do_not_advance_and_the_next_run_sends_only_them(sandbox_lms_factory: SandboxLmsFactory, tmp_path):
    lms = sandbox_lms_factory(faults=SandboxFaults(reject_share=0.05, reject_ids=frozenset({"u0007"}), seed=3))
    frame = delivery(200)
    ledger = SyncLedger(tmp_path / "ledger.db")

    first = sync(lms, ledger, frame, run_id="r1")
    retry = unacknowledged(ledger, frame)
    assert first.failed == len(retry) > 1 and "u0007" in set(retry["sourcedId"])
    assert not set(retry["sourcedId"]) & set(lms.store.active_records(TENANT, "users"))

    still_rejected = sync(lms, ledger, retry, run_id="r2")  # same fault: rejected again, still not lost
    assert still_rejected.failed == len(retry) and len(unacknowledged(ledger, frame)) == len(retry)

    lms.faults.reject_share, lms.faults.reject_ids = 0.0, frozenset()
    lifted = sync(lms, ledger, unacknowledged(ledger, frame), run_id="r3")
    assert lifted.failed == 0 and lifted.total("created") == len(retry)
    assert unacknowledged(ledger, frame).empty
    assert set(applications_per_record(lms).values()) == {1}


def metadata(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def test_through_the_pipeline_rejected_records_are_reported_and_the_next_diff_sends_only_them(district_pipeline):
    roster = generate_district(students=60, seed=29, district=SLUG)
    student = roster.tables["users"].query("role == 'student'")["sourcedId"].iloc[0]
    enrollment = roster.tables["enrollments"]["sourcedId"].iloc[-1]
    district_pipeline.publish(roster)
    district_pipeline.lms.faults.reject_ids = frozenset({student, enrollment})
    rejected = sum(int(t["sourcedId"].isin([student, enrollment]).sum()) for t in roster.tables.values())  # demographics share user ids

    first = district_pipeline.run()

    assert first.success  # rejections are retried next run, not a failure of this one
    synced = metadata(first, "lms_sync_results")
    assert rejected == 3 and synced["failed"] == rejected
    assert synced["created"] == sum(len(t) for t in roster.tables.values()) - rejected
    assert student in synced["rejected_records"] and enrollment in synced["rejected_records"]
    assert student not in district_pipeline.lms.store.active_records(SYNC_TENANT, "users")

    district_pipeline.lms.faults.reject_ids = frozenset()
    second = district_pipeline.run()

    assert second.success
    assert metadata(second, "roster_changes")["dagster/row_count"] == rejected  # the diff re-sends only them
    assert metadata(second, "lms_sync_results")["created"] == rejected and metadata(second, "lms_sync_results")["failed"] == 0
    for entity in ("users", "demographics", "enrollments"):
        assert set(district_pipeline.lms.store.active_records(SYNC_TENANT, entity)) == set(roster.tables[entity]["sourcedId"])
