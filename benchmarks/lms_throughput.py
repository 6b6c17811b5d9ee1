"""LMS write throughput against the sandbox LMS, and requests per changed record on a nightly change.

(a) An onboarding sync (every record of a generated district created) through the same planning,
    concurrent push, HTTP client and ledger the `lms_sync_results` asset uses, batches of
    --batch-size, --concurrency batches in flight; against the raw HTTP ceiling measured in the same
    run on the same server: the same request bodies re-sent pre-encoded under their already-seen
    idempotency keys, with the same concurrency, so the server answers from its idempotency log
    without applying anything. Target: the sync reaches at least half of the ceiling.
(b) A nightly change (the generator's next night: about 1 % of records new, changed or dropped) of a
    larger district, whose first night is taken as acknowledged (its sync state computed, not sent):
    the requests the sync sends, counted at the server (the sandbox's idempotency log counts every
    batch request that reaches it), per changed record. Target: at most 1.05 / batch size.

The sandbox LMS runs in its own process (`rostersync sandbox lms`), as a real LMS would: served
from a thread of this process it would share one GIL with the client, the ledger and the planner, and
charge the server's work to the sync.

Run from the repository root:

    .venv/bin/python -m benchmarks.lms_throughput --students 20000 --nightly-students 300000
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import requests

from benchmarks._measure import peak_rss_mib, timed
from rostersync_assets.connectors.ledger import BatchContext, SyncLedger
from rostersync_assets.connectors.lms_client import LmsClient, LmsOperation, batch_body
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.sandbox.generator import generate_district, next_night
from rostersync_assets.sandbox.lms_app import SandboxLmsStore
from rostersync_assets.sync.diff import STATE_COLUMNS, build_change_set, empty_state
from rostersync_assets.sync.push import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, BatchAnswer, PlannedBatch, plan_batches, push_changes

DISTRICT = "bench-district"
BULK = dict.fromkeys(ENTITIES, "bulk")


@contextmanager
def _sandbox_lms_process(db_path: Path, token: str) -> Iterator[str]:
    """`rostersync sandbox lms` on a free loopback port; yields its URL, stops it afterwards."""
    command = [sys.executable, "-m", "rostersync_assets.cli", "sandbox", "lms", "--db", str(db_path), "--port", "0"]
    env = {**os.environ, "ROSTERSYNC_LMS_TOKEN": token}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()  # "sandbox LMS listening on <url>", printed once the socket is bound
        if not line.startswith("sandbox LMS listening on "):
            raise RuntimeError(f"the sandbox LMS did not start: {line!r}")
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        process.terminate()
        process.wait(timeout=30)


def _operations(batch: PlannedBatch) -> list[LmsOperation]:
    return [LmsOperation(c.lms_op, c.sourced_id, c.record) for c in batch.changes]


def _sync(url: str, token: str, ledger: SyncLedger, changes: pd.DataFrame, delivery_id: str, batch_size: int, concurrency: int):
    """The `lms_sync_results` loop without Dagster: plan, send concurrently over HTTP, record each batch.

    Returns the push summary and the seconds spent in ledger writes (on the loop's own thread).
    """
    ledger_s = [0.0]
    with LmsClient(url, token) as client:

        def send(batch: PlannedBatch) -> BatchAnswer:
            results = client.send_batch(DISTRICT, batch.entity, _operations(batch), batch.idempotency_key)
            return BatchAnswer([(r.status, r.error) for r in results], replayed=results.replayed)

        def record(batch: PlannedBatch, statuses: list[tuple[str, str | None]]) -> None:
            context = BatchContext(run_id="bench", district=DISTRICT, delivery_id=delivery_id, archive_uri="",
                                   entity=batch.entity, idempotency_key=batch.idempotency_key)
            started = time.perf_counter()
            ledger.record_batch(context, batch.changes, statuses)
            ledger_s[0] += time.perf_counter() - started

        batches = plan_batches(changes, district=DISTRICT, delivery_id=delivery_id, batch_size=batch_size)
        return push_changes(batches, send=send, record=record, concurrency=concurrency), ledger_s[0]


def _replay_ceiling(url: str, token: str, changes: pd.DataFrame, delivery_id: str, batch_size: int, concurrency: int) -> float:
    """Records/s when the server only replays: the same bodies and keys, pre-encoded, same concurrency."""
    requests_ = [
        (f"{url}/api/v1/tenants/{DISTRICT}/{batch.entity}/batch", batch.idempotency_key,
         batch_body(_operations(batch)), len(batch.changes))
        for batch in plan_batches(changes, district=DISTRICT, delivery_id=delivery_id, batch_size=batch_size)
    ]
    local = threading.local()

    def post(request: tuple[str, str, bytes, int]) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        endpoint, key, body, records = request
        response = session.post(endpoint, data=body, headers={"Idempotency-Key": key}, timeout=60)
        assert response.headers.get("Idempotent-Replayed") == "true", response.status_code
        return records

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        records = sum(pool.map(post, requests_))
    return records / (time.perf_counter() - started)


def _acknowledged_state(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The sync state after a fully acknowledged first night: what the ledger would hold."""
    created = build_change_set(tables, BULK, {entity: empty_state() for entity in ENTITIES})
    states = {}
    for entity in ENTITIES:
        rows = created[created["entity"] == entity]
        states[entity] = pd.DataFrame(
            {"sourcedId": rows["sourcedId"], "content_hash": rows["hash_after"], "active": True,
             "school": rows["school"], "natural_key": rows["natural_key"]}
        )[STATE_COLUMNS].reset_index(drop=True)
    return states


def throughput(students: int, seed: int, batch_size: int, concurrency: int, work: Path, results: dict[str, float]) -> None:
    roster = generate_district(students=students, seed=seed, district=DISTRICT)
    changes = build_change_set(roster.tables, BULK, {entity: empty_state() for entity in ENTITIES})
    token = secrets.token_urlsafe(16)
    print(f"(a) {students:,} students: {len(changes):,} records to create, batches of {batch_size}, {concurrency} in flight", flush=True)
    with _sandbox_lms_process(work / "lms-a.db", token) as url:
        ledger = SyncLedger(work / "ledger-a.db")
        with timed("(a) onboarding sync", results):
            summary, ledger_s = _sync(url, token, ledger, changes, "night-1", batch_size, concurrency)
        assert summary.failed == 0 and summary.total("created") == len(changes)
        sync_rate = len(changes) / results["(a) onboarding sync"]
        ceiling = _replay_ceiling(url, token, changes, "night-1", batch_size, concurrency)
    print(f"(a) sync throughput   {sync_rate:>10,.0f} records/s  ({summary.batches} batches; ledger writes "
          f"{ledger_s:.2f} s = {ledger_s / len(changes) * 1e6:.0f} us/record of it)")
    print(f"(a) raw HTTP ceiling  {ceiling:>10,.0f} records/s  (the same requests answered from the idempotency log)")
    print(f"(a) sync / ceiling    {sync_rate / ceiling:>10.2f}         target >= 0.50: {'met' if sync_rate >= ceiling / 2 else 'NOT met'}", flush=True)


def requests_per_change(students: int, seed: int, batch_size: int, concurrency: int, work: Path, results: dict[str, float]) -> None:
    roster = generate_district(students=students, seed=seed, district=DISTRICT)
    records = sum(len(table) for table in roster.tables.values())
    with timed("(b) first night's sync state", results):
        states = _acknowledged_state(roster.tables)
    tomorrow, _ = next_night(roster, seed=seed, night=2)
    with timed("(b) nightly diff", results):
        changes = build_change_set(tomorrow.tables, BULK, states)
    token = secrets.token_urlsafe(16)
    with _sandbox_lms_process(work / "lms-b.db", token) as url:
        with timed(f"(b) nightly sync of {len(changes):,} changes", results):
            summary, _ = _sync(url, token, SyncLedger(work / "ledger-b.db"), changes, "night-2", batch_size, concurrency)
    assert summary.failed == 0
    sent = sum(row.times_seen for row in SandboxLmsStore(work / "lms-b.db").idempotency_log())
    per_change = sent / len(changes)
    print(f"(b) {students:,} students, {records:,} records; nightly change {len(changes):,} records ({len(changes) / records:.2%})")
    print(f"(b) requests at the server {sent}; per changed record {per_change:.6f} = {per_change * batch_size:.3f} / batch size"
          f"  target <= 1.05 / batch size: {'met' if per_change * batch_size <= 1.05 else 'NOT met'}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=20_000, help="district size for the throughput run (a)")
    parser.add_argument("--nightly-students", type=int, default=300_000, help="district size for the nightly run (b)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rostersync-lms-bench-") as tmp:
        throughput(args.students, args.seed, args.batch_size, args.concurrency, Path(tmp), results)
        requests_per_change(args.nightly_students, args.seed, args.batch_size, args.concurrency, Path(tmp), results)
    print(f"peak RSS {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
