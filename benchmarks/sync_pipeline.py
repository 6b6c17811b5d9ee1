"""Time the hot paths of a nightly sync on a synthetic district: parse, validate, diff, LMS push.

Night 1 is the onboarding (everything is created); night 2 is a typical nightly change (about 1 %
new, 1 % changed, 0.5 % dropped enrollments), which is what a district pays every night. The LMS
push goes over HTTP to the sandbox LMS on loopback, batches of 500, through the same client, ledger
and batching code the `lms_sync_results` asset uses. Run from the repository root:

    .venv/bin/python -m benchmarks.sync_pipeline --students 20000
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from benchmarks._measure import peak_rss_mib, timed
from rostersync_assets.connectors.ledger import BatchContext, SyncLedger
from rostersync_assets.connectors.lms_client import LmsClient, LmsOperation
from rostersync_assets.oneroster.reader import read_package_dir
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.oneroster.validate import validate_package
from rostersync_assets.sandbox.generator import DistrictRoster, generate_district, next_night, write_delivery
from rostersync_assets.sandbox.lms_server import running_sandbox_lms
from rostersync_assets.sync.diff import build_change_set
from rostersync_assets.sync.push import BatchAnswer, Exchange, PlannedBatch, plan_batches, push_changes

DISTRICT = "bench-district"


def _night(label: str, roster: DistrictRoster, work: Path, ledger: SyncLedger, client: LmsClient, results: dict[str, float]) -> None:
    folder = work / label
    write_delivery(roster, folder)
    with timed(f"{label}: parse", results):
        package = read_package_dir(folder)
    with timed(f"{label}: validate", results):
        report = validate_package(package)
    assert report.accepted and not any(report.rejected_rows(e) for e in ENTITIES), "generated data must validate"
    with timed(f"{label}: load sync state", results):
        states = {entity: ledger.load_state(DISTRICT, entity) for entity in ENTITIES}
    with timed(f"{label}: diff", results):
        changes = build_change_set(report.tables, package.modes, states, partial(ledger.natural_keys, DISTRICT))

    def send(batch: PlannedBatch) -> BatchAnswer:
        operations = [LmsOperation(c.lms_op, c.sourced_id, c.record) for c in batch.changes]
        results = client.send_batch(DISTRICT, batch.entity, operations, batch.idempotency_key)
        return BatchAnswer([(r.status, r.error) for r in results], replayed=results.replayed)

    def record(exchanges: Sequence[Exchange]) -> None:
        ledger.record_batches([
            (BatchContext("bench", DISTRICT, label, "", batch.entity, batch.idempotency_key), batch.changes, statuses)
            for batch, statuses in exchanges
        ])

    with timed(f"{label}: push {len(changes):,} changes", results):
        summary = push_changes(plan_batches(changes, district=DISTRICT, delivery_id=label), send=send, record=record)
    seconds = results[f"{label}: push {len(changes):,} changes"]
    print(f"{label}: {summary.batches} batches, {len(changes) / seconds:,.0f} records/s, {summary.failed} failed", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rostersync-bench-") as tmp:
        work = Path(tmp)
        token = secrets.token_urlsafe(16)
        roster = generate_district(students=args.students, seed=args.seed, district=DISTRICT)
        rows = {entity: len(table) for entity, table in roster.tables.items()}
        print(f"district: {args.students:,} students; rows: {rows}", flush=True)
        with running_sandbox_lms(work / "lms.db", token) as url, LmsClient(url, token) as client:
            ledger = SyncLedger(work / "ledger.db")
            _night("night 1 (onboarding)", roster, work, ledger, client, results)
            tomorrow, expected = next_night(roster, seed=args.seed, night=2)
            print(f"night 2 generated changes: {expected.counts()}", flush=True)
            _night("night 2 (nightly)", tomorrow, work, ledger, client, results)
    print(f"peak RSS {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
