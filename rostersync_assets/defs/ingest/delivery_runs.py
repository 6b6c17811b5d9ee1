"""What the SFTP sensor and the district schedules share: how they look at a folder, and one run per delivery.

Both can see the same delivery (a schedule backing up the sensor fires after the sensor already
synced it, or the other way round), and Dagster deduplicates run keys only per sensor or schedule.
So a delivery, identified by its district and listing fingerprint (run tags), gets a run from
whichever sees it first, and the other skips it while that run is queued, running or succeeded.
"""

import time
from collections.abc import Mapping

import dagster as dg

from rostersync_assets.connectors.parallel_listing import ListingSettings
from rostersync_assets.connectors.sftp import RemoteFile, RetryPolicy, SftpConnector
from rostersync_assets.defs.partitions import DISTRICT_TAG
from rostersync_assets.registry import District, DistrictRegistry

LISTING_TAG = "rostersync/listing"
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


def named_failures(failures: Mapping[str, str]) -> str:
    """`slug: reason; ...` for a skip reason, the first few only: a regional outage must not make the
    tick's one-line outcome thousands of characters long."""
    named = "; ".join(f"{slug}: {reason}" for slug, reason in list(failures.items())[:_NAMED_FAILURES])
    more = len(failures) - _NAMED_FAILURES
    return f"{named}; and {more} more (see the tick's log)" if more > 0 else named
