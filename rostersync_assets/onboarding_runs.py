"""Runs launched from the command line (`districts add --sync`, `districts sync`, `replay`), without a daemon.

Dagster's backfills are executed by the daemon, which an admin onboarding a district from a shell
usually does not run. So a command executes each district's partition run in this process, one after
the other on the home's instance, tags every run with one backfill id, and records that backfill
(asset selection = every asset, one partition per district) with its outcome: the Dagster UI lists it
under Backfills with its runs, as if the daemon had run it. The record is written when the runs are
done (a daemon that sees a requested backfill would launch the same runs a second time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

# Dagster's public API can submit a backfill for the daemon but not record one whose runs were executed
# elsewhere; these internals (dagster 1.13) are what the daemon itself writes, and
# test_districts_command.py checks the record round-trips.
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.execution.asset_backfill import AssetBackfillData
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.tags import BACKFILL_ID_TAG
from dagster._core.utils import make_new_backfill_id

from rostersync_assets.defs.ingest.sensors import sync_district_roster
from rostersync_assets.defs.partitions import districts_partitions

QUIET_RUN_CONFIG: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class RunSummary:
    """One district's run as a person reads it: did it sync, what the LMS answered, which checks failed."""

    district: str
    run_id: str
    success: bool
    delivery_id: str = ""
    created: int = 0
    updated: int = 0
    deactivated: int = 0
    failed: int = 0
    failed_checks: list[str] = field(default_factory=list)
    # Assets this run materialized (user strings): what the backfill record counts as done.
    materialized: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.success:
            checks = ", ".join(self.failed_checks) or "a step failed"
            return f"{self.district}: NOT synced ({checks}); run {self.run_id}"
        return (
            f"{self.district}: delivery {self.delivery_id}: {self.created} created, {self.updated} updated, "
            f"{self.deactivated} deactivated, {self.failed} failed; run {self.run_id}"
        )


def summarize(district: str, result: dg.ExecuteInProcessResult) -> RunSummary:
    """The run's outcome from its events (counts from lms_sync_results' metadata, never record contents)."""

    def metadata(asset: str) -> dict[str, object]:
        events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
        return {k: v.value for k, v in events[-1].materialization.metadata.items()} if events else {}

    synced, archived = metadata("lms_sync_results"), metadata("archived_roster_delivery")
    return RunSummary(
        district=district,
        run_id=result.run_id,
        success=result.success and bool(synced),
        delivery_id=str(archived.get("delivery_id", "")),
        created=int(synced.get("created", 0)),
        updated=int(synced.get("updated", 0)),
        deactivated=int(synced.get("deactivated", 0)),
        failed=int(synced.get("failed", 0)),
        failed_checks=sorted(e.check_name for e in result.get_asset_check_evaluations() if not e.passed),
        materialized=sorted({e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}),
    )


def register_partition(instance: dg.DagsterInstance, slug: str) -> bool:
    """Add the district's partition (what the sensor would do on its next tick); whether it was new."""
    if instance.has_dynamic_partition(districts_partitions.name, slug):
        return False
    instance.add_dynamic_partitions(districts_partitions.name, [slug])
    return True


def run_partition(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    slug: str,
    tags: Mapping[str, str],
    run_config: Mapping[str, Any] | None = None,
) -> RunSummary:
    """Execute the district's sync job in this process on `instance` (the UI shows the run as any other)."""
    job = defs.resolve_job_def(sync_district_roster.name)
    config = {**QUIET_RUN_CONFIG, **(run_config or {})}
    result = job.execute_in_process(
        instance=instance, partition_key=slug, tags=dict(tags), run_config=config, raise_on_error=False
    )
    return summarize(slug, result)


@dataclass
class BackfillOutcome:
    backfill_id: str
    runs: list[RunSummary]

    @property
    def ok(self) -> bool:
        return all(run.success and run.failed == 0 for run in self.runs)


def run_as_backfill(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    runs: Sequence[tuple[str, Mapping[str, str]]],
    *,
    title: str,
    say: Callable[[str], None],
) -> BackfillOutcome:
    """Run each (district, run tags) in turn as one backfill, then record the backfill and its outcome."""
    backfill_id = make_new_backfill_id()
    started = time.time()
    summaries = []
    for index, (slug, tags) in enumerate(runs, start=1):
        say(f"[{index}/{len(runs)}] {slug}: running sync_district_roster (backfill {backfill_id})")
        summary = run_partition(instance, defs, slug, {**tags, BACKFILL_ID_TAG: backfill_id})
        say(f"[{index}/{len(runs)}] {summary.describe()}")
        summaries.append(summary)
    outcome = BackfillOutcome(backfill_id, summaries)
    _record_backfill(instance, defs, outcome, started, title)
    return outcome


def _record_backfill(
    instance: dg.DagsterInstance, defs: dg.Definitions, outcome: BackfillOutcome, started: float, title: str
) -> None:
    """An asset backfill over every asset for the districts run, marked done with what each run did."""
    asset_graph = defs.resolve_asset_graph()
    keys = sorted(asset_graph.materializable_asset_keys)
    slugs = [run.district for run in outcome.runs]
    data = AssetBackfillData.from_asset_partitions(
        asset_graph=asset_graph,
        partition_names=slugs,
        asset_selection=keys,
        dynamic_partitions_store=instance,
        all_partitions=False,
        backfill_start_timestamp=started,
    )
    materialized = AssetGraphSubset.from_asset_partition_set(
        {AssetKeyPartitionKey(dg.AssetKey.from_user_string(key), run.district) for run in outcome.runs for key in run.materialized},
        asset_graph,
    )
    data = data._replace(
        requested_subset=data.target_subset,
        materialized_subset=materialized,
        failed_and_downstream_subset=data.target_subset - materialized,
    )
    backfill = PartitionBackfill(
        backfill_id=outcome.backfill_id,
        status=BulkActionStatus.COMPLETED_SUCCESS if outcome.ok else BulkActionStatus.COMPLETED_FAILED,
        from_failure=False,
        tags={},
        backfill_timestamp=started,
        asset_selection=keys,
        title=title,
        description="executed in process by the rostersync command line (no daemon needed)",
        serialized_asset_backfill_data=None,
        asset_backfill_data=data,
        backfill_end_timestamp=time.time(),
    )
    instance.add_backfill(backfill)
