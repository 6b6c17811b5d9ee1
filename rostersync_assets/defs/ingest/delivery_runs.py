"""What the SFTP sensor and the district schedules share: how they look at a folder, and one run per delivery.

Both can see the same delivery (a schedule backing up the sensor fires after the sensor already
synced it, or the other way round), and Dagster deduplicates run keys only per sensor or schedule.
So a delivery, identified by its district and listing fingerprint (run tags), gets a run from
whichever sees it first, and the other skips it while that run is queued, running or succeeded.

A OneRoster REST district has no folder to look at: its delivery exists only once the run has
pulled it. So a schedule tick gives it one run, identified by the district and the tick's scheduled
time instead of a fingerprint, and a second evaluation of the same tick finds that run and adds none.
"""

import time
from collections.abc import Collection, Mapping
from datetime import UTC, datetime

import dagster as dg

from rostersync_assets.connectors.parallel_listing import ListingSettings
from rostersync_assets.connectors.sftp import RemoteFile, RetryPolicy, SftpConnector
from rostersync_assets.defs.partitions import DISTRICT_TAG, districts_partitions
from rostersync_assets.registry import District, DistrictRegistry

LISTING_TAG = "rostersync/listing"
# The UTC time of the schedule tick a REST district's run was requested for (compact ISO 8601).
SCHEDULED_FOR_TAG = "rostersync/scheduled-for"
TRIGGER_TAG = "rostersync/trigger"
FINGERPRINT_CHARS = 16
# A run in one of these states did not sync the delivery, so it does not stop another attempt.
_UNSYNCED = frozenset({dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED})
# Tag values per runs query: keeps the SQL `IN (...)` list well under SQLite's variable limit.
_QUERY_CHUNK = 200
# How many failing districts a skip reason names (the tick's log has every one).
_NAMED_FAILURES = 10


def sftp_districts(registry: DistrictRegistry) -> dict[str, District]:
    """The districts that deliver over SFTP (others, such as OneRoster REST sources, are not listed)."""
    return {slug: d for slug, d in registry.districts.items() if getattr(d, "sftp", None) is not None}


def rest_districts(registry: DistrictRegistry) -> dict[str, District]:
    """The districts pulled from a OneRoster REST provider (no folder: only a schedule or a hand
    launch, `rostersync districts sync`, starts their runs)."""
    return {slug: d for slug, d in registry.districts.items() if getattr(d, "rest", None) is not None}


def list_folder(district: District, settings: ListingSettings, *, looks: int = 1) -> list[list[RemoteFile]]:
    """`looks` listings of the district's folder over one session, `settings.settle_s` apart.

    One attempt with the tick's short timeout, unlike a run's download (which retries with backoff):
    the next tick is the retry, and a retrying look at a dead server would hold a worker for minutes.
    """
    connector = SftpConnector(
        district.sftp.endpoint(),
        district.sftp.credentials(),
        timeout_s=settings.timeout_s,
        retry=RetryPolicy(attempts=1),
    )
    listings = []
    with connector:
        for index in range(looks):
            if index:
                time.sleep(settings.settle_s)
            listings.append(connector.list_files())
    return listings


def delivery_run_request(slug: str, fingerprint: str, trigger: str) -> dg.RunRequest:
    """The run that syncs one district's delivery; the run key is the same whoever requests it."""
    short = fingerprint[:FINGERPRINT_CHARS]
    return dg.RunRequest(
        run_key=f"{slug}:{short}",
        partition_key=slug,
        tags={DISTRICT_TAG: slug, LISTING_TAG: short, TRIGGER_TAG: trigger},
    )


def tick_id(scheduled_at: datetime) -> str:
    """The tick's scheduled time in UTC (`20261130T110000Z`): the same instant whatever zone the
    schedule runs in, and safe in a run key and a tag value."""
    return scheduled_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def scheduled_pull_request(slug: str, scheduled_at: datetime) -> dg.RunRequest:
    """The run that pulls a REST district for one schedule tick; the run key is district + tick, so
    Dagster, too, launches it at most once for that tick."""
    tick = tick_id(scheduled_at)
    return dg.RunRequest(
        run_key=f"{slug}:pull:{tick}",
        partition_key=slug,
        tags={DISTRICT_TAG: slug, SCHEDULED_FOR_TAG: tick, TRIGGER_TAG: "schedule"},
    )


def districts_pulled_for_tick(instance: dg.DagsterInstance, slugs: Collection[str], scheduled_at: datetime) -> set[str]:
    """The districts among `slugs` that already have a run for the tick at `scheduled_at`, in any state:
    the tick has had its run (a failed pull is retried by the next tick or by hand, not by evaluating
    this tick again)."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={SCHEDULED_FOR_TAG: tick_id(scheduled_at)}))
    return {run.tags[DISTRICT_TAG] for run in runs if run.tags.get(DISTRICT_TAG) in slugs}


def deliveries_with_runs(instance: dg.DagsterInstance, ready: Mapping[str, str]) -> set[str]:
    """The districts among `ready` (slug -> listing fingerprint) whose delivery already has a run
    that is queued, running or succeeded, whichever sensor or schedule launched it."""
    wanted = {(slug, fingerprint[:FINGERPRINT_CHARS]) for slug, fingerprint in ready.items()}
    values = sorted({short for _, short in wanted})
    found: set[str] = set()
    for start in range(0, len(values), _QUERY_CHUNK):
        runs = instance.get_runs(filters=dg.RunsFilter(tags={LISTING_TAG: values[start : start + _QUERY_CHUNK]}))
        found.update(
            run.tags.get(DISTRICT_TAG, "")
            for run in runs
            if run.status not in _UNSYNCED and (run.tags.get(DISTRICT_TAG), run.tags.get(LISTING_TAG)) in wanted
        )
    return found


def register_partitions(instance: dg.DagsterInstance, requests: list[dg.RunRequest]) -> None:
    """Add the districts `requests` run as partitions if they are not yet. The sensor registers new
    districts, but a schedule cannot ask Dagster to (no dynamic partition requests), and a run request
    for an unknown partition fails the whole tick: every district on that schedule would lose its run
    when the sensor is off or has not ticked since the district was added."""
    known = set(instance.get_dynamic_partitions(districts_partitions.name))
    missing = sorted({r.partition_key for r in requests if r.partition_key is not None} - known)
    if missing:
        instance.add_dynamic_partitions(districts_partitions.name, missing)


def named_failures(failures: Mapping[str, str]) -> str:
    """`slug: reason; ...` for a skip reason, the first few only: a regional outage must not make the
    tick's one-line outcome thousands of characters long."""
    named = "; ".join(f"{slug}: {reason}" for slug, reason in list(failures.items())[:_NAMED_FAILURES])
    more = len(failures) - _NAMED_FAILURES
    return f"{named}; and {more} more (see the tick's log)" if more > 0 else named
