"""The one place where rostersync's Dagster definitions are assembled.

Loaded lazily (`@dg.definitions`), so choosing resources by environment happens when Dagster loads
the code location, not when the module is imported.
"""

import os

import dagster as dg

from rostersync_assets.defs.ingest import assets as ingest_assets
from rostersync_assets.defs.ingest.schedules import district_schedules
from rostersync_assets.defs.ingest.sensors import sftp_delivery_sensor, sync_district_roster
from rostersync_assets.defs.oneroster import assets as oneroster_assets
from rostersync_assets.defs.resources import build_resources
from rostersync_assets.defs.sync import changes as sync_changes
from rostersync_assets.defs.sync import drift as sync_drift
from rostersync_assets.defs.sync import lms_sync
from rostersync_assets.home import RostersyncHome

ENV_VAR = "ROSTERSYNC_ENV"
# Every module holding assets or standalone asset checks; a new one is added here.
ASSET_MODULES = [ingest_assets, oneroster_assets, sync_changes, lms_sync, sync_drift]


def build_definitions(resources: dict[str, object]) -> dg.Definitions:
    """Definitions with the given resources (the tests pass theirs; Dagster loads `defs`)."""
    return dg.Definitions(
        assets=dg.load_assets_from_modules(ASSET_MODULES),
        asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
        jobs=[sync_district_roster],
        sensors=[sftp_delivery_sensor],
        schedules=district_schedules(resources),
        resources=resources,
        # I/O-bound steps: one process per run is faster than one per step on small machines.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(build_resources(os.environ.get(ENV_VAR, "local"), RostersyncHome.resolve()))
