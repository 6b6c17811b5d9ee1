"""The SFTP sensor: one look at every registered district's folder per tick, a run per new delivery.

Hundreds of districts share one tick, which Dagster abandons after 60 s (keeping neither run requests
nor cursor), so the looks run in parallel under per-district timeouts and a tick budget
(connectors/parallel_listing.py); a district that cannot be listed is reported by name and reason
and keeps its previous watch state, and the others get their runs.
"""

import os
import time

import dagster as dg

from rostersync_assets.connectors.delivery import WatchState, watch_step
from rostersync_assets.connectors.parallel_listing import ListingSettings, LookFailed, look_in_parallel
from rostersync_assets.connectors.watch_cursor import decode_cursor, encode_cursor
from rostersync_assets.defs.ingest.delivery_runs import (
    deliveries_with_runs,
    delivery_run_request,
    list_folder,
    named_failures,
    sftp_districts,
)
from rostersync_assets.defs.partitions import districts_partitions
from rostersync_assets.defs.resources import HomeResource

sync_district_roster = dg.define_asset_job(
    "sync_district_roster",
    selection=dg.AssetSelection.all(),
    description="Carry one district's latest complete delivery from its SFTP server to the LMS.",
)


@dg.sensor(
    job=sync_district_roster,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Lists every registered district's SFTP folder in parallel; requests one run per new complete "
        "delivery (unchanged since the previous look, or vouched for by its ready marker) that has no run "
        "yet. Registers new districts as partitions. A district whose server fails or hangs is reported "
        "by name and does not stop the others."
    ),
)
def sftp_delivery_sensor(context: dg.SensorEvaluationContext, home: HomeResource) -> dg.SensorResult:
    settings = ListingSettings.from_environ(os.environ)
    registry = home.registry()
    watched = sftp_districts(registry)
    previous = decode_cursor(context.cursor)
    started = time.monotonic()
    looks = look_in_parallel(
        watched, lambda district: list_folder(district, settings)[0], workers=settings.workers, budget_s=settings.budget_s
    )

    states: dict[str, WatchState] = {}
    ready: dict[str, str] = {}
    failures: dict[str, str] = {}
    for slug in sorted(watched):
        state, look = previous.get(slug, WatchState()), looks[slug]
        if isinstance(look, LookFailed):
            failures[slug] = look.reason
            states[slug] = state  # what was seen before still counts as the previous look
            continue
        states[slug], fingerprint = watch_step(state, look, watched[slug].sftp.ready_marker)
        if fingerprint is not None:
            ready[slug] = fingerprint
    looked_s = time.monotonic() - started
    synced_elsewhere = deliveries_with_runs(context.instance, ready) if ready else set()
    run_requests = [
        delivery_run_request(slug, fingerprint, trigger="sensor")
        for slug, fingerprint in ready.items()
        if slug not in synced_elsewhere
    ]

    for slug, reason in failures.items():
        context.log.warning(f"district {slug}: folder not listed: {reason}")
    summary = (
        f"{len(watched)} district(s) watched, {len(watched) - len(failures)} listed in {looked_s:.1f} s "
        f"({settings.workers} at a time), "
        f"{len(run_requests)} new delivery(ies), {len(synced_elsewhere)} already run by another trigger, "
        f"{len(failures)} not listed"
    )
    context.log.info(summary)
    new_slugs = sorted(set(registry.districts) - set(context.instance.get_dynamic_partitions(districts_partitions.name)))
    return dg.SensorResult(
        run_requests=run_requests,
        skip_reason=None if run_requests else (f"{summary}. Not listed: {named_failures(failures)}" if failures else summary),
        dynamic_partitions_requests=[districts_partitions.build_add_request(new_slugs)] if new_slugs else [],
        cursor=encode_cursor(states, watched),
    )
