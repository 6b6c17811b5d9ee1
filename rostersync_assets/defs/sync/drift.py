"""Drift: the live LMS against the sync state and tonight's change set, checked before anything is written.

The check targets `roster_changes` and is `blocking`, so `lms_sync_results` waits for it: a record
the delivery is about to write over an LMS-side edit is named in the check and the run log before
the write, not discovered afterwards. It reports with severity WARN, which Dagster does not let
block: drift never holds the nightly sync (see docs/design-notes.md, "Drift").
"""


import time

import dagster as dg
import pandas as pd

from rostersync_assets.connectors.lms_client import LmsError
from rostersync_assets.defs.partitions import districts_partitions
from rostersync_assets.defs.resources import HomeResource, LedgerResource, LmsResource
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.sync.drift import DRIFT_KINDS, DriftReport, delivery_side, entity_drift, lms_side

DRIFT_CHECK = "lms_matches_sync_state"


@dg.asset_check(
    asset=dg.AssetKey("roster_changes"),
    name=DRIFT_CHECK,
    blocking=True,
    partitions_def=districts_partitions,
    pool="lms",
    description=(
        "Warns when the LMS holds records changed, deactivated, reactivated, added or lost outside rostersync "
        "(its listing against the sync state); names the conflicts, records tonight's delivery will write over "
        "an LMS-side edit, before the write. Never holds the sync."
    ),
)
def lms_matches_sync_state(
    context: dg.AssetCheckExecutionContext,
    roster_changes: pd.DataFrame,
    home: HomeResource,
    lms: LmsResource,
    ledger: LedgerResource,
) -> dg.AssetCheckResult:
    district = home.district(context.partition_key)
    delivery_id = roster_changes.attrs.get("delivery_id", "")
    started = time.monotonic()
    try:
        with ledger.open() as store, lms.client() as client:
            report = DriftReport(
                tuple(
                    entity_drift(
                        entity,
                        store.load_state(district.slug, entity),
                        lms_side(client.iter_records(district.lms_tenant, entity), entity),
                        delivery_side(roster_changes, entity),
                    )
                    for entity in ENTITIES
                )
            )
    except LmsError as error:  # an unreadable listing is reported; it must not hold the sync by itself
        context.log.warning(f"district {district.slug}: drift not checked: {error}")
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"error": str(error)})
    for line in report.conflict_lines():
        context.log.warning(f"district {district.slug}: delivery {delivery_id}: drift conflict: {line}")
    if report.drifted:
        context.log.info(
            f"district {district.slug}: {report.drifted} record(s) drifted in the LMS, {report.conflicted} in conflict "
            f"with delivery {delivery_id}; the others stay as the LMS has them"
        )
    return dg.AssetCheckResult(
        passed=report.drifted == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "delivery_id": delivery_id,
            "lms_tenant": district.lms_tenant,
            "drifted": report.drifted,
            **{kind: report.total(kind) for kind in DRIFT_KINDS},
            "conflicts": report.conflicted,
            "by_entity": dg.MetadataValue.md(report.by_entity_markdown()),
            "samples": dg.MetadataValue.md(report.samples_markdown()),
            "seconds": round(time.monotonic() - started, 3),
        },
    )
