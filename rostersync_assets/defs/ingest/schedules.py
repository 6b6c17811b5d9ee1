"""District schedules: look for a delivery at the hour each district chose, in its own time zone.

A schedule can replace the sensor for a district (the admin knows the upload is done by 05:00) or
back it up (the sensor was stopped, or its look failed that night). Dagster schedules are static
definitions while districts come and go, so there is one schedule per distinct (cron, time zone)
pair in the registry, built when the code location loads: Dagster then evaluates the cron line in
the zone itself (daylight saving included) and catches up ticks missed while the daemon was down.
Each tick reads the registry again, so a district added to or removed from an existing pair is
followed at once; a new pair appears after the code location reloads.

A tick lists each due SFTP district's folder twice, `settle_s` apart, over one session; a complete,
unchanged delivery gets a run unless one is queued, running or succeeded for it already (from the
sensor or an earlier tick): a delivery is never synced twice.

A due OneRoster REST district gets one run per tick, unseen: what it delivers is known only after
the pull, and the sensor does not watch it, so its schedule is what pulls it every night. Its run key
is the district and the tick's time, and a tick evaluated again finds that run and adds none. A REST
district without a schedule is pulled only by hand (`rostersync districts sync`), which is allowed
(onboarding, an external orchestrator) but logged as a warning when the code location loads.
"""

import hashlib
import os
from collections.abc import Mapping
from datetime import datetime

import dagster as dg

from rostersync_assets.connectors.delivery import WatchState, listing_fingerprint, watch_step
from rostersync_assets.connectors.parallel_listing import ListingSettings, LookFailed, look_in_parallel
from rostersync_assets.defs.ingest.delivery_runs import (
    deliveries_with_runs,
    delivery_run_request,
    districts_pulled_for_tick,
    list_folder,
    named_failures,
    register_partitions,
    rest_districts,
    scheduled_pull_request,
    sftp_districts,
)
from rostersync_assets.defs.ingest.sensors import sync_district_roster
from rostersync_assets.defs.resources import HomeResource
from rostersync_assets.delivery_schedule import DeliverySchedule
from rostersync_assets.registry import District, DistrictRegistry


def district_schedules(resources: Mapping[str, object]) -> list[dg.ScheduleDefinition]:
    """One schedule per (cron, time zone) pair that a district asks for, read from the registry of
    the `home` resource the definitions are built with."""
    home = resources["home"]
    if not isinstance(home, HomeResource):
        raise TypeError(f"the 'home' resource must be a HomeResource, not {type(home).__name__}")
    registry = home.registry()
    for slug in unscheduled_rest_districts(registry):
        dg.get_dagster_logger().warning(
            f"district {slug}: OneRoster REST source without a schedule is never pulled automatically "
            f"(only by `rostersync districts sync {slug}`); add schedule: {{cron: ..., timezone: ...}} to its registry entry"
        )
    pairs = {d.schedule for d in registry.districts.values() if d.schedule is not None}
    return [schedule_for(pair) for pair in sorted(pairs)]


def unscheduled_rest_districts(registry: DistrictRegistry) -> list[str]:
    """REST districts nothing pulls unless someone launches their run (the sensor watches SFTP only)."""
    return sorted(slug for slug, d in rest_districts(registry).items() if d.schedule is None)


def schedule_name(schedule: DeliverySchedule) -> str:
    """A stable name for a pair (Dagster names allow only letters, digits and '_'; the UI shows the
    cron line and zone next to it). The `sftp_` prefix predates REST districts and is kept: renaming
    would orphan the tick history of existing installations."""
    digest = hashlib.sha256(f"{schedule.cron}\x1f{schedule.timezone}".encode()).hexdigest()[:10]
    return f"sftp_delivery_schedule_{digest}"


def schedule_for(schedule: DeliverySchedule) -> dg.ScheduleDefinition:
    """The schedule that runs every district registered with `schedule` when it fires."""

    @dg.schedule(
        name=schedule_name(schedule),
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        job=sync_district_roster,
        # The registry entry is the request to run it: no one should have to switch it on as well.
        default_status=dg.DefaultScheduleStatus.RUNNING,
        tags={"rostersync/cron": schedule.cron, "rostersync/timezone": schedule.timezone},
        description=(
            f"For each district registered with schedule '{schedule.cron}' ({schedule.timezone}): over SFTP, "
            "looks for a complete delivery and requests a run unless that delivery already has one; over "
            "OneRoster REST, requests one pull per tick."
        ),
    )
    def _run_due_districts(
        context: dg.ScheduleEvaluationContext, home: HomeResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        registry = home.registry()
        due_sftp = {slug: d for slug, d in sftp_districts(registry).items() if d.schedule == schedule}
        due_rest = {slug: d for slug, d in rest_districts(registry).items() if d.schedule == schedule}
        if not due_sftp and not due_rest:
            return dg.SkipReason(f"no district is registered with schedule '{schedule.cron}' ({schedule.timezone})")
        sftp_requests, sftp_notes = _sftp_deliveries(context, due_sftp)
        rest_requests, rest_notes = _rest_pulls(context.instance, due_rest, context.scheduled_execution_time)
        requests = sftp_requests + rest_requests
        if requests:
            register_partitions(context.instance, requests)
            return requests
        due = len(due_sftp) + len(due_rest)
        return dg.SkipReason(". ".join([f"{due} district(s) due, nothing to run", *sftp_notes, *rest_notes]))

    return _run_due_districts


def _sftp_deliveries(
    context: dg.ScheduleEvaluationContext, due: Mapping[str, District]
) -> tuple[list[dg.RunRequest], list[str]]:
    """Runs for the due SFTP districts' complete, settled deliveries that have none yet, and what
    kept the others from one (for the skip reason)."""
    if not due:
        return [], []
    settings = ListingSettings.from_environ(os.environ)
    looks = look_in_parallel(
        due, lambda district: list_folder(district, settings, looks=2), workers=settings.workers, budget_s=settings.budget_s
    )
    ready: dict[str, str] = {}
    waiting: list[str] = []
    failures: dict[str, str] = {}
    for slug in sorted(due):
        look = looks[slug]
        if isinstance(look, LookFailed):
            failures[slug] = look.reason
            continue
        first, second = look
        fingerprint = watch_step(WatchState(seen=listing_fingerprint(first)), second, due[slug].sftp.ready_marker)[1]
        if fingerprint is None:
            waiting.append(slug)
        else:
            ready[slug] = fingerprint
    already = deliveries_with_runs(context.instance, ready) if ready else set()
    for slug, reason in failures.items():
        context.log.warning(f"district {slug}: folder not listed: {reason}")
    requests = [delivery_run_request(slug, fp, trigger="schedule") for slug, fp in ready.items() if slug not in already]
    notes = []
    if already:
        notes.append(f"already synced or syncing: {', '.join(sorted(already))}")
    if waiting:
        notes.append(f"no complete, settled delivery: {', '.join(waiting)}")
    if failures:
        notes.append(f"not listed: {named_failures(failures)}")
    return requests, notes


def _rest_pulls(
    instance: dg.DagsterInstance, due: Mapping[str, District], scheduled_at: datetime
) -> tuple[list[dg.RunRequest], list[str]]:
    """One pull per due REST district for this tick, unless the tick already gave it one."""
    if not due:
        return [], []
    pulled = districts_pulled_for_tick(instance, due, scheduled_at)
    requests = [scheduled_pull_request(slug, scheduled_at) for slug in sorted(due) if slug not in pulled]
    notes = [f"already pulled for this tick: {', '.join(sorted(pulled))}"] if pulled else []
    return requests, notes
