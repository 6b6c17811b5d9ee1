"""A sync killed with SIGKILL in the middle of its LMS writes resumes with nothing lost and nothing applied twice.

The first run is the real `sync_district_roster` job on a real Dagster instance, in a subprocess
(`sync_runner.py`), writing to the sandbox LMS over HTTP; the sandbox is slowed down so that the
kill lands while batches are still being sent, after at least KILL_AFTER_BATCHES were applied. The
re-run is the same job on the same instance. The LMS must then hold exactly the delivery, and the
sandbox's idempotency log must show every record applied by exactly one batch (a batch the killed
run sent but never recorded comes back with the same key and is replayed, not re-applied). Runs on
the ledger's two backends (SQLite file, real PostgreSQL server) through the `ledger_url` fixture.
"""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from rostersync_assets.connectors.ledger import SyncLedger
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.sandbox.generator import generate_district
from rostersync_assets.sync.payloads import lms_record
from rostersync_assets_tests.fixtures.pipeline import SLUG, TENANT
from rostersync_assets_tests.sync_runner import sync_resources

BATCH_SIZE = 20
CONCURRENCY = 4
KILL_AFTER_BATCHES = 12
REPO = Path(__file__).resolve().parents[1]


def start_sync(pipeline, ledger_url: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "rostersync_assets_tests.sync_runner", "--home", str(pipeline.home.root),
        "--district", SLUG, "--ledger-url", ledger_url, "--batch-size", str(BATCH_SIZE), "--concurrency", str(CONCURRENCY),
    ]
    env = {**os.environ, "DAGSTER_HOME": pipeline.instance.root_directory, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def kill_mid_sync(process: subprocess.Popen, pipeline, timeout_s: float = 60.0) -> int:
    """SIGKILL the run once the sandbox has applied KILL_AFTER_BATCHES batches; returns how many it had."""
    deadline = time.monotonic() + timeout_s
    while (applied := len(pipeline.lms.store.idempotency_log())) < KILL_AFTER_BATCHES:
        finished = process.poll() is not None
        assert not finished, f"the run ended before it could be killed:\n{process.stdout.read().decode(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, "the run applied too few batches in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return applied


def applications_per_record(pipeline) -> Counter:
    """(entity, sourcedId) -> how many applied batches carried it; a replay is not an application."""
    return Counter(
        (row.entity, result["sourcedId"])
        for row in pipeline.lms.store.idempotency_log()
        for result in row.response["results"]
        if result["status"] != "error"
    )


def test_a_sync_killed_mid_run_resumes_to_the_delivery_with_no_batch_applied_twice(district_pipeline, ledger_url):
    roster = generate_district(students=150, seed=23, district=SLUG)
    total = sum(len(table) for table in roster.tables.values())
    district_pipeline.publish(roster)
    district_pipeline.lms.faults.latency_s = 0.05  # slow enough for the kill to land mid-sync

    killed = start_sync(district_pipeline, ledger_url)
    applied_at_kill = kill_mid_sync(killed, district_pipeline)

    assert killed.returncode == -signal.SIGKILL
    with SyncLedger(ledger_url) as ledger:
        acknowledged = sum(len(ledger.load_state(SLUG, entity)) for entity in ENTITIES)
    assert 0 < acknowledged < total  # killed mid-sync: part acknowledged, part not

    district_pipeline.lms.faults.latency_s = 0.0
    same = sync_resources(district_pipeline.home, ledger_url, BATCH_SIZE, CONCURRENCY)
    rerun = district_pipeline.run(ledger=same["ledger"], lms=same["lms"])

    assert rerun.success
    synced = {e.asset_key.to_user_string(): e.materialization.metadata for e in rerun.get_asset_materialization_events()}
    assert synced["lms_sync_results"]["created"].value == total - acknowledged
    for entity in ENTITIES:
        expected = {row["sourcedId"]: lms_record(row, entity) for row in roster.tables[entity].to_dict("records")}
        live = district_pipeline.lms.store.active_records(TENANT, entity)
        assert live == expected, entity
    applications = applications_per_record(district_pipeline)
    assert len(applications) == total and set(applications.values()) == {1}
    replayed = [row.key for row in district_pipeline.lms.store.idempotency_log() if row.times_seen > 1]
    print(f"killed after {applied_at_kill} applied batches, {acknowledged}/{total} records acknowledged; {len(replayed)} batch(es) replayed on the re-run")
