"""Runs the `sync_district_roster` job for one district on the Dagster instance in $DAGSTER_HOME, in a
process of its own: the resume test (test_sync_resume.py) kills it with SIGKILL in the middle of a sync.

    python -m rostersync_assets_tests.sync_runner --home H --district D --ledger-url U --batch-size N

The LMS URL and token come from ROSTERSYNC_LMS_URL / ROSTERSYNC_LMS_TOKEN, as in production.
"""

import argparse
import sys
import warnings
from pathlib import Path

import dagster as dg

from rostersync_assets.definitions import build_definitions
from rostersync_assets.defs.ingest.sensors import sync_district_roster
from rostersync_assets.defs.resources import LedgerResource, LmsResource, build_resources
from rostersync_assets.home import RostersyncHome

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def sync_resources(home: RostersyncHome, ledger_url: str, batch_size: int, concurrency: int) -> dict[str, object]:
    """The local resources, with the ledger and LMS batching under test (shared by the test's own re-run)."""
    lms = LmsResource(
        base_url=dg.EnvVar("ROSTERSYNC_LMS_URL"),
        token=dg.EnvVar("ROSTERSYNC_LMS_TOKEN"),
        batch_size=batch_size,
        max_concurrency=concurrency,
    )
    return {**build_resources("local", home), "ledger": LedgerResource(url=ledger_url), "lms": lms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--district", required=True)
    parser.add_argument("--ledger-url", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args(argv)
    resources = sync_resources(RostersyncHome(Path(args.home)), args.ledger_url, args.batch_size, args.concurrency)
    job = build_definitions(resources).resolve_job_def(sync_district_roster.name)
    warnings.simplefilter("ignore")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, partition_key=args.district, run_config=QUIET, raise_on_error=False)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
