"""LMS write throughput against the sandbox LMS, and requests per changed record on a nightly change.

(a) An onboarding sync (every record of a generated district created) through the same planning,
    concurrent push, HTTP client and ledger the `lms_sync_results` asset uses, batches of
    --batch-size, --concurrency batches in flight; against the raw HTTP ceiling measured in the same
    run: the same request bodies, encoded beforehand, POSTed by a bare client (a requests session per
    thread, nothing else) with the same concurrency to a fresh sandbox LMS, which applies them exactly
    as it applies the sync's. Target: the sync reaches at least half of the ceiling.
    `--ids uuid` gives every record a random UUID sourcedId instead of the generator's sequential ones,
    as many SIS exports do: B-tree indexes on sourcedId (the LMS's and the ledger's) then take their
    inserts at random places instead of appending.
    Also printed, as a stricter reference: the replay ceiling, the same requests sent again so the
    LMS answers from its idempotency log without applying anything (no sync can reach it: the LMS's
    own writes are what it leaves out). Each phase prints the CPU seconds of the LMS process and of
    this process, to show which side bounds it.
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
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import requests

from benchmarks._measure import cpu_seconds, peak_rss_mib, timed
from rostersync_assets.connectors.ledger import BatchContext, SyncLedger
from rostersync_assets.connectors.lms_client import LmsClient, LmsOperation, batch_body
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.sandbox.generator import generate_district, next_night
from rostersync_assets.sandbox.lms_app import SandboxLmsStore
from rostersync_assets.sync.diff import STATE_COLUMNS, build_change_set, empty_state
from rostersync_assets.sync.push import (
    DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, BatchAnswer, Exchange, PlannedBatch, PushSummary, plan_batches, push_changes,
)

DISTRICT = "bench-district"
BULK = dict.fromkeys(ENTITIES, "bulk")


@contextmanager
def _sandbox_lms_process(db_path: Path, token: str) -> Iterator[tuple[str, int]]:
    """`rostersync sandbox lms` on a free loopback port; yields its URL and pid, stops it afterwards."""
    command = [sys.executable, "-m", "rostersync_assets.cli", "sandbox", "lms", "--db", str(db_path), "--port", "0"]
    env = {**os.environ, "ROSTERSYNC_LMS_TOKEN": token}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()  # "sandbox LMS listening on <url>", printed once the socket is bound
        if not line.startswith("sandbox LMS listening on "):
            raise RuntimeError(f"the sandbox LMS did not start: {line!r}")
        yield line.rsplit(" ", 1)[1].strip(), process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def _operations(batch: PlannedBatch) -> list[LmsOperation]:
    return [LmsOperation(c.lms_op, c.sourced_id, c.record) for c in batch.changes]


@dataclass
class LedgerWrites:
    """The sync's ledger transactions: how many, and their seconds on the push loop's thread."""

    count: int = 0
    seconds: float = 0.0


def _sync(
    url: str, token: str, ledger: SyncLedger, changes: pd.DataFrame, delivery_id: str, batch_size: int, concurrency: int
) -> tuple[PushSummary, LedgerWrites]:
    """The `lms_sync_results` loop without Dagster: plan, send concurrently over HTTP, record what is answered."""
    writes = LedgerWrites()
    with LmsClient(url, token) as client:

        def send(batch: PlannedBatch) -> BatchAnswer:
            results = client.send_batch(DISTRICT, batch.entity, _operations(batch), batch.idempotency_key)
            return BatchAnswer([(r.status, r.error) for r in results], replayed=results.replayed)

        def record(exchanges: Sequence[Exchange]) -> None:
            answered = [
                (BatchContext(run_id="bench", district=DISTRICT, delivery_id=delivery_id, archive_uri="",
                              entity=batch.entity, idempotency_key=batch.idempotency_key), batch.changes, statuses)
                for batch, statuses in exchanges
            ]
            started = time.perf_counter()
            ledger.record_batches(answered)
            writes.seconds += time.perf_counter() - started
            writes.count += 1

        batches = plan_batches(changes, district=DISTRICT, delivery_id=delivery_id, batch_size=batch_size)
        return push_changes(batches, send=send, record=record, concurrency=concurrency), writes


def _raw_http(url: str, token: str, changes: pd.DataFrame, delivery_id: str, batch_size: int, concurrency: int) -> Callable[[], tuple[int, bool]]:
    """A bare client for the sync's requests: bodies and keys encoded beforehand, POSTed from a thread pool.

    Returns a function that sends them all once (same concurrency as the sync) and returns the
    records sent and whether every answer was a replay.
    """
    requests_ = [
        (f"{url}/api/v1/tenants/{DISTRICT}/{batch.entity}/batch", batch.idempotency_key,
         batch_body(_operations(batch)), len(batch.changes))
        for batch in plan_batches(changes, district=DISTRICT, delivery_id=delivery_id, batch_size=batch_size)
    ]
    local = threading.local()

    def post(request: tuple[str, str, bytes, int]) -> tuple[int, bool]:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        endpoint, key, body, records = request
        response = session.post(endpoint, data=body, headers={"Idempotency-Key": key}, timeout=60)
        response.raise_for_status()
        return records, response.headers.get("Idempotent-Replayed") == "true"

    def send_all() -> tuple[int, bool]:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            answers = list(pool.map(post, requests_))
        return sum(records for records, _ in answers), all(replayed for _, replayed in answers)

    return send_all


@dataclass
class Phase:
    """One measured phase: records per second, and the CPU seconds each side spent."""

    records: int
    seconds: float
    lms_cpu_s: float
    client_cpu_s: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    def line(self, label: str) -> str:
        per_record = 1e6 / self.records
        return (f"(a) {label:<26} {self.rate:>9,.0f} records/s  {self.seconds:5.2f} s; CPU: LMS {self.lms_cpu_s:5.2f} s "
                f"({self.lms_cpu_s * per_record:4.1f} us/record), client {self.client_cpu_s:5.2f} s ({self.client_cpu_s * per_record:4.1f} us/record)")


def _measured(lms_pid: int, work: Callable[[], int]) -> Phase:
    lms_cpu, client_cpu, started = cpu_seconds(lms_pid), cpu_seconds(), time.perf_counter()
    records = work()
    seconds = time.perf_counter() - started
    return Phase(records, seconds, cpu_seconds(lms_pid) - lms_cpu, cpu_seconds() - client_cpu)


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


def _with_uuid_ids(changes: pd.DataFrame) -> pd.DataFrame:
    """The change set with each sourcedId replaced by a UUID derived from it (in the record's JSON too).

    Only the ids change: references inside records keep the generator's ids, which the sandbox does
    not check, so the LMS and the ledger see random keys with everything else as before.
    """
    new_ids = [str(uuid.uuid5(uuid.NAMESPACE_OID, sourced_id)) for sourced_id in changes["sourcedId"]]
    records = [
        record.replace(f'"sourcedId":"{old}"', f'"sourcedId":"{new}"', 1)
        for record, old, new in zip(changes["record"], changes["sourcedId"], new_ids)
    ]
    return changes.assign(sourcedId=pd.Series(new_ids, index=changes.index, dtype="str"),
                          record=pd.Series(records, index=changes.index, dtype="str"))


def throughput(
    students: int, seed: int, batch_size: int, concurrency: int, ids: str, ledger_url: str | None, work: Path,
    results: dict[str, float],
) -> None:
    roster = generate_district(students=students, seed=seed, district=DISTRICT)
    changes = build_change_set(roster.tables, BULK, {entity: empty_state() for entity in ENTITIES})
    if ids == "uuid":
        changes = _with_uuid_ids(changes)
    token = secrets.token_urlsafe(16)
    print(f"(a) {students:,} students: {len(changes):,} records to create ({ids} sourcedIds), batches of {batch_size}, "
          f"{concurrency} in flight", flush=True)
    # Each side gets a fresh LMS (its own process and database), so both apply to an empty one.
    with _sandbox_lms_process(work / "lms-a-sync.db", token) as (url, pid):
        ledger = SyncLedger(ledger_url or work / "ledger-a.db")
        outcome: dict[str, object] = {}

        def sync() -> int:
            outcome["summary"], outcome["writes"] = _sync(url, token, ledger, changes, "night-1", batch_size, concurrency)
            return len(changes)

        synced = _measured(pid, sync)
        results["(a) onboarding sync"] = synced.seconds
    with _sandbox_lms_process(work / "lms-a-raw.db", token) as (raw_url, raw_pid):
        send_all = _raw_http(raw_url, token, changes, "night-1", batch_size, concurrency)
        ceiling = _measured(raw_pid, lambda: _sent(send_all, replayed=False))
        replay = _measured(raw_pid, lambda: _sent(send_all, replayed=True))
    summary, writes = outcome["summary"], outcome["writes"]
    assert isinstance(summary, PushSummary) and summary.failed == 0 and summary.total("created") == len(changes)
    assert isinstance(writes, LedgerWrites)
    print(synced.line("sync") + f"; ledger: {writes.seconds:.2f} s of it, {writes.count} transactions for {summary.batches} batches")
    print(ceiling.line("raw HTTP ceiling"))
    print(replay.line("replay (reference)"))
    ratio = synced.rate / ceiling.rate
    print(f"(a) sync / raw HTTP ceiling  {ratio:>9.2f}          target >= 0.50: {'met' if ratio >= 0.5 else 'NOT met'}")
    print(f"(a) sync / replay            {synced.rate / replay.rate:>9.2f}          (the LMS applying nothing: no target)", flush=True)


def _sent(send_all: Callable[[], tuple[int, bool]], *, replayed: bool) -> int:
    records, all_replayed = send_all()
    assert all_replayed == replayed, "a ceiling run was not answered the way it was meant to be"
    return records


def requests_per_change(students: int, seed: int, batch_size: int, concurrency: int, work: Path, results: dict[str, float]) -> None:
    roster = generate_district(students=students, seed=seed, district=DISTRICT)
    records = sum(len(table) for table in roster.tables.values())
    with timed("(b) first night's sync state", results):
        states = _acknowledged_state(roster.tables)
    tomorrow, _ = next_night(roster, seed=seed, night=2)
    with timed("(b) nightly diff", results):
        changes = build_change_set(tomorrow.tables, BULK, states)
    token = secrets.token_urlsafe(16)
    with _sandbox_lms_process(work / "lms-b.db", token) as (url, _):
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
    parser.add_argument("--ids", choices=("sequential", "uuid"), default="sequential",
                        help="sourcedIds of run (a): the generator's sequential ones, or random UUIDs")
    parser.add_argument("--ledger-url", help="the ledger of run (a) (SQLAlchemy URL of an EMPTY database); "
                        "default: a SQLite file in a temporary folder")
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rostersync-lms-bench-") as tmp:
        throughput(args.students, args.seed, args.batch_size, args.concurrency, args.ids, args.ledger_url, Path(tmp), results)
        requests_per_change(args.nightly_students, args.seed, args.batch_size, args.concurrency, Path(tmp), results)
    print(f"peak RSS {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
