"""Time the nightly drift check on a synthetic district: read the whole LMS and compare it with the state.

The sandbox LMS is filled with the district as a sync would leave it (written straight into its
database, then 0.1 % of each entity edited there "outside rostersync"); the check then lists every
entity over HTTP on loopback, page by page, hashes each record with the sync's `content_hash` and
compares it with the sync state. The bare listing (same pages, no hashing) is timed in the same run
as the ceiling. Run from the repository root:

    .venv/bin/python -m benchmarks.drift_check --students 20000
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks._measure import peak_rss_mib, timed
from rostersync_assets.connectors.lms_client import LmsClient
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.sandbox.generator import generate_district
from rostersync_assets.sandbox.lms_app import SandboxLmsStore
from rostersync_assets.sandbox.lms_server import running_sandbox_lms
from rostersync_assets.sync.drift import DriftReport, delivery_side, entity_drift, lms_side
from rostersync_assets.sync.diff import empty_changes
from rostersync_assets.sync.payloads import records_json, table_hashes

TENANT = "bench-district"
WRITE_BATCH = 5000


def _fill(store: SandboxLmsStore, entity: str, table: pd.DataFrame) -> pd.DataFrame:
    """Write `table` into the LMS as a sync would, edit 0.1 % of it there; returns the sync state."""
    records = [json.loads(r) for r in records_json(table, entity)]
    for start in range(0, len(records), WRITE_BATCH):
        ops = [{"op": "upsert", "sourcedId": r["sourcedId"], "record": r} for r in records[start : start + WRITE_BATCH]]
        store.apply_batch(TENANT, entity, ops, f"fill:{entity}:{start}")
    edits = [{"op": "deactivate", "sourcedId": r["sourcedId"]} for r in records[:: 1000]]
    store.apply_batch(TENANT, entity, edits, f"outside:{entity}")
    hashes = table_hashes(table, entity)
    return pd.DataFrame({"sourcedId": hashes["sourcedId"], "content_hash": hashes["content_hash"], "active": True})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=20000)
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    roster = generate_district(students=args.students, seed=1, district=TENANT)
    records = sum(len(t) for t in roster.tables.values())
    print(f"district: {args.students:,} students, {records:,} records", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        db, token = Path(tmp) / "lms.sqlite3", secrets.token_urlsafe(16)
        store = SandboxLmsStore(db)
        with timed("fill the sandbox LMS", results):
            states = {entity: _fill(store, entity, roster.tables[entity]) for entity in ENTITIES}
        no_changes = empty_changes()
        with running_sandbox_lms(db, token) as url, LmsClient(url, token) as client:
            with timed("list only (HTTP ceiling)", results):
                listed = sum(sum(1 for _ in client.iter_records(TENANT, entity)) for entity in ENTITIES)
            with timed("drift check (list, hash, compare)", results):
                report = DriftReport(
                    tuple(
                        entity_drift(entity, states[entity], lms_side(client.iter_records(TENANT, entity), entity), delivery_side(no_changes, entity))
                        for entity in ENTITIES
                    )
                )
    seconds = results["drift check (list, hash, compare)"]
    print(f"listed {listed:,} records; drift check {listed / seconds:,.0f} records/s; "
          f"{report.total('deactivated_in_lms'):,} deactivated outside rostersync found", flush=True)
    print(f"peak RSS {peak_rss_mib():,.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
