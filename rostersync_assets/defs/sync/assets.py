"""Sync: the change set against what the LMS last acknowledged, then applied through the LMS API."""


import time

import dagster as dg
import pandas as pd

from rostersync_assets.connectors.ledger import BatchContext
from rostersync_assets.connectors.lms_client import LmsOperation
from rostersync_assets.defs.oneroster.assets import table_key
from rostersync_assets.defs.partitions import OWNERS, districts_partitions
from rostersync_assets.defs.resources import HomeResource, LedgerResource, LmsResource
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.sync.diff import DEACTIVATE_OP, build_change_set, change_counts
from rostersync_assets.sync.push import PlannedBatch, plan_batches, push_changes

# Hold the sync when a delivery would deactivate more than this share of an entity's active records
# (an empty, truncated or re-keyed file must never empty the LMS).
MAX_DEACTIVATED_SHARE = 0.10
DEACTIVATION_CHECK = "roster_changes_within_deactivation_limit"


@dg.asset(
    partitions_def=districts_partitions,
    group_name="sync",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    io_manager_key="roster_io_manager",
    ins={entity: dg.AssetIn(key=table_key(entity)) for entity in ENTITIES},
    check_specs=[
        dg.AssetCheckSpec(
            DEACTIVATION_CHECK,
            asset="roster_changes",
            blocking=True,
            partitions_def=districts_partitions,
            description=f"Blocks the sync when more than {MAX_DEACTIVATED_SHARE:.0%} of an entity's active records would be deactivated.",
        )
    ],
    description=(
        "Creates, updates, reactivations and deactivations per entity between the validated tables and "
        "what the LMS last acknowledged for this district; upserts parents first, deactivations children first."
    ),
)
def roster_changes(context: dg.AssetExecutionContext, ledger: LedgerResource, **tables: pd.DataFrame):
    district = context.partition_key
    store = ledger.open()
    states = {entity: store.load_state(district, entity) for entity in ENTITIES}
    modes = {entity: table.attrs.get("oneroster_mode", "absent") for entity, table in tables.items()}
    changes = build_change_set(tables, modes, states)
    # Rows rejected by validation are missing from a bulk table, yet they were delivered: never read
    # their absence as a removal.
    held_back = [e for e, t in tables.items() if t.attrs.get("rejected_rows", 0)]
    if held_back:
        changes = changes[~(changes["entity"].isin(held_back) & changes["op"].eq(DEACTIVATE_OP))].reset_index(drop=True)
    delivery_id = next(iter(tables.values())).attrs.get("delivery_id", "")
    changes.attrs = {"delivery_id": delivery_id}
    counts = change_counts(changes, states)
    over = [c for c in counts if c.deactivated_share > MAX_DEACTIVATED_SHARE]
    table_md = "| entity | create | update | reactivate | deactivate | active before |\n|---|---|---|---|---|---|\n" + "\n".join(
        f"| {c.entity} | {c.create} | {c.update} | {c.reactivate} | {c.deactivate} | {c.active_before} |" for c in counts
    )
    yield dg.Output(
        changes,
        metadata={
            "dagster/row_count": len(changes),
            "delivery_id": delivery_id,
            "creates": sum(c.create for c in counts),
            "updates": sum(c.update + c.reactivate for c in counts),
            "deactivations": sum(c.deactivate for c in counts),
            "by_entity": dg.MetadataValue.md(table_md),
            "deactivations_held_back_for": ", ".join(held_back) or "none",
        },
    )
    yield dg.AssetCheckResult(
        check_name=DEACTIVATION_CHECK,
        passed=not over,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "limit": MAX_DEACTIVATED_SHARE,
            "max_deactivated_share": max((c.deactivated_share for c in counts), default=0.0),
            "entities_over_limit": ", ".join(f"{c.entity} ({c.deactivate}/{c.active_before})" for c in over) or "none",
        },
    )


def _operations(batch: PlannedBatch) -> list[LmsOperation]:
    return [LmsOperation(op=c.lms_op, sourced_id=c.sourced_id, record=c.record) for c in batch.changes]


@dg.asset(
    partitions_def=districts_partitions,
    group_name="sync",
    kinds={"api"},
    owners=OWNERS,
    pool="lms",
    description=(
        "The change set applied through the LMS REST API in idempotent batches; every record's outcome is "
        "written to the ledger and the sync state advances only for what the LMS acknowledged."
    ),
)
def lms_sync_results(
    context: dg.AssetExecutionContext,
    roster_changes: pd.DataFrame,
    archived_roster_delivery: dict,
    home: HomeResource,
    lms: LmsResource,
    ledger: LedgerResource,
) -> dg.MaterializeResult:
    district = home.district(context.partition_key)
    delivery_id = archived_roster_delivery["delivery_id"]
    uris = {f["name"]: f["uri"] for f in archived_roster_delivery["files"]}
    store = ledger.open()
    started = time.monotonic()
    with lms.client() as client:

        def send(batch: PlannedBatch) -> list[tuple[str, str | None]]:
            results = client.send_batch(district.lms_tenant, batch.entity, _operations(batch), batch.idempotency_key)
            return [(r.status, r.error) for r in results]

        def record(batch: PlannedBatch, statuses: list[tuple[str, str | None]]) -> None:
            store.record_batch(
                BatchContext(
                    run_id=context.run.run_id,
                    district=district.slug,
                    delivery_id=delivery_id,
                    archive_uri=uris.get(f"{batch.entity}.csv", ""),
                    entity=batch.entity,
                    idempotency_key=batch.idempotency_key,
                ),
                batch.changes,
                statuses,
            )

        summary = push_changes(
            plan_batches(roster_changes, district=district.slug, delivery_id=delivery_id, batch_size=lms.batch_size),
            send=send,
            record=record,
        )
    seconds = time.monotonic() - started
    context.log.info(
        f"district {district.slug}: delivery {delivery_id} synced in {summary.batches} batch(es): "
        f"{summary.total('created')} created, {summary.total('updated')} updated, "
        f"{summary.total('deactivated')} deactivated, {summary.failed} failed"
    )
    table_md = "| entity | " + " | ".join(("created", "updated", "unchanged", "deactivated", "error")) + " |\n|---|---|---|---|---|---|\n"
    table_md += "\n".join(
        f"| {entity} | " + " | ".join(str(c[s]) for s in ("created", "updated", "unchanged", "deactivated", "error")) + " |"
        for entity, c in summary.by_entity.items()
    )
    return dg.MaterializeResult(
        metadata={
            "delivery_id": delivery_id,
            "lms_tenant": district.lms_tenant,
            "batches": summary.batches,
            "created": summary.total("created"),
            "updated": summary.total("updated"),
            "unchanged": summary.total("unchanged"),
            "deactivated": summary.total("deactivated"),
            "failed": summary.failed,
            "seconds": round(seconds, 3),
            "by_entity": dg.MetadataValue.md(table_md if summary.by_entity else "no changes"),
        }
    )
