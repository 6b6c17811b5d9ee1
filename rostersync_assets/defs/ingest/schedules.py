"""District schedules: look for a delivery at the hour each district chose, in its own time zone.

A schedule can replace the sensor for a district (the admin knows the upload is done by 05:00) or
back it up (the sensor was stopped, or its look failed that night). Dagster schedules are static
definitions while districts come and go, so there is one schedule per distinct (cron, time zone)
pair in the registry, built when the code location loads: Dagster then evaluates the cron line in
the zone itself (daylight saving included) and catches up ticks missed while the daemon was down.
Each tick reads the registry again, so a district added to or removed from an existing pair is
followed at once; a new pair appears after the code location reloads.

A tick lists each due district's folder twice, `settle_s` apart, over one session; a complete,
unchanged delivery gets a run unless one is queued, running or succeeded for it already (from the
sensor or an earlier tick): a delivery is never synced twice.
"""

import hashlib
import os
from collections.abc import Mapping

import dagster as dg

from rostersync_assets.connectors.delivery import WatchState, listing_fingerprint, watch_step
from rostersync_assets.connectors.parallel_listing import ListingSettings, LookFailed, look_in_parallel
from rostersync_assets.defs.ingest.delivery_runs import (
    deliveries_with_runs,
    delivery_run_request,
    list_folder,
    named_failures,
    sftp_districts,
)
from rostersync_assets.defs.ingest.sensors import sync_district_roster
from rostersync_assets.defs.resources import HomeResource
from rostersync_assets.delivery_schedule import DeliverySchedule


def district_schedules(resources: Mapping[str, object]) -> list[dg.ScheduleDefinition]:
    """One schedule per (cron, time zone) pair that an SFTP district asks for, read from the registry
    of the `home` resource the definitions are built with."""
    home = resources["home"]
    if not isinstance(home, HomeResource):
        raise TypeError(f"the 'home' resource must be a HomeResource, not {type(home).__name__}")
    pairs = {d.schedule for d in sftp_districts(home.registry()).values() if d.schedule is not None}
    return [schedule_for(pair) for pair in sorted(pairs)]


def schedule_name(schedule: DeliverySchedule) -> str:
    """A stable name for a pair (Dagster names allow only letters, digits and '_'; the UI shows the
    cron line and zone next to it)."""
    digest = hashlib.sha256(f"{schedule.cron}\x1f{schedule.timezone}".encode()).hexdigest()[:10]
    return f"sftp_delivery_schedule_{digest}"


def schedule_for(schedule: DeliverySchedule) -> dg.ScheduleDefinition:
    """The schedule that looks at every SFTP district registered with `schedule` when it fires."""

    @dg.schedule(
        name=schedule_name(schedule),
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        job=sync_district_roster,
        # The registry entry is the request to run it: no one should have to switch it on as well.
        default_status=dg.DefaultScheduleStatus.RUNNING,
        tags={"rostersync/cron": schedule.cron, "rostersync/timezone": schedule.timezone},
        description=(
            f"Looks for a complete delivery of each SFTP district registered with schedule "
            f"'{schedule.cron}' ({schedule.timezone}) and requests a run for it unless that delivery "
            "already has one."
        ),
    )
    def _look_for_deliveries(
        context: dg.ScheduleEvaluationContext, home: HomeResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        settings = ListingSettings.from_environ(os.environ)
        due = {slug: d for slug, d in sftp_districts(home.registry()).items() if d.schedule == schedule}
        if not due:
            return dg.SkipReason(f"no SFTP district is registered with schedule '{schedule.cron}' ({schedule.timezone})")
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
        if requests:
            return requests
        parts = [f"{len(due)} district(s) due, no delivery to sync"]
        if already:
            parts.append(f"already synced or syncing: {', '.join(sorted(already))}")
        if waiting:
            parts.append(f"no complete, settled delivery: {', '.join(waiting)}")
        if failures:
            parts.append(f"not listed: {named_failures(failures)}")
        return dg.SkipReason(". ".join(parts))

    return _look_for_deliveries
