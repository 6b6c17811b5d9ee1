"""The LMS write: the change set applied through the LMS API, every outcome recorded in the ledger."""


import time
from collections.abc import Sequence

import dagster as dg
import pandas as pd

from rostersync_assets.connectors.ledger import BatchContext
from rostersync_assets.connectors.lms_client import LmsOperation
from rostersync_assets.defs.partitions import OWNERS, districts_partitions
from rostersync_assets.defs.resources import HomeResource, LedgerResource, LmsResource
from rostersync_assets.defs.sync.preview import preview_result
from rostersync_assets.sync.push import BatchAnswer, Exchange, PlannedBatch, PushSummary, plan_batches, push_changes


def _operations(batch: PlannedBatch) -> list[LmsOperation]:
    return [LmsOperation(op=c.lms_op, sourced_id=c.sourced_id, record=c.record) for c in batch.changes]


def _rejected_md(summary: PushSummary) -> str:
    """The first records the LMS rejected, by id (the contract keeps record values out of its errors)."""
    rows = "\n".join(f"| {entity} | {sourced_id} | {error or ''} |" for entity, sourced_id, error in summary.rejected_sample)
    return f"{summary.failed} record(s) rejected, retried next run; the first:\n\n| entity | sourcedId | LMS error |\n|---|---|---|\n{rows}"


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
    if district.sync.preview:
        return preview_result(context, roster_changes, district.slug, delivery_id)
    uris = {f["name"]: f["uri"] for f in archived_roster_delivery["files"]}
    sha256s = {f["name"]: f["sha256"] for f in archived_roster_delivery["files"]}
    store = ledger.open()
    started = time.monotonic()
    with lms.client() as client:

        def send(batch: PlannedBatch) -> BatchAnswer:
            results = client.send_batch(district.lms_tenant, batch.entity, _operations(batch), batch.idempotency_key)
            return BatchAnswer([(r.status, r.error) for r in results], replayed=results.replayed)

        def batch_context(batch: PlannedBatch) -> BatchContext:
            archived = f"{batch.entity}.csv"
            return BatchContext(
                run_id=context.run.run_id, district=district.slug, delivery_id=delivery_id,
                archive_uri=uris.get(archived, ""), archive_sha256=sha256s.get(archived, ""),
                entity=batch.entity, idempotency_key=batch.idempotency_key,
            )

        def record(exchanges: Sequence[Exchange]) -> None:
            store.record_batches([(batch_context(batch), batch.changes, statuses) for batch, statuses in exchanges])

        summary = push_changes(
            plan_batches(roster_changes, district=district.slug, delivery_id=delivery_id, batch_size=lms.batch_size),
            send=send,
            record=record,
            concurrency=lms.max_concurrency,
        )
    seconds = time.monotonic() - started
    context.log.info(
        f"district {district.slug}: delivery {delivery_id} synced in {summary.batches} batch(es): "
        f"{summary.total('created')} created, {summary.total('updated')} updated, "
        f"{summary.total('deactivated')} deactivated, {summary.failed} failed"
    )
    if summary.failed:
        context.log.warning(
            f"district {district.slug}: the LMS rejected {summary.failed} record(s); their sync state did not advance, "
            "so the next run sends them again (see the rejected_records metadata)"
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
            "rejected_records": dg.MetadataValue.md(_rejected_md(summary) if summary.failed else "none"),
            "max_concurrency": lms.max_concurrency,
        }
    )
