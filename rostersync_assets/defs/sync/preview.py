"""Preview mode: a district whose registry entry says `sync: {mode: preview}` runs everything up to
`roster_changes` (tables, checks, change set, safety verdict) and writes nothing to the LMS.

`lms_sync_results` still materializes, with zero writes and the change set's counts, so the Dagster UI
shows plainly, run after run, what a real sync would have sent. The sync state does not move, so each
preview is judged against what the LMS really holds.
"""

import dagster as dg
import pandas as pd


def preview_result(context: dg.AssetExecutionContext, changes: pd.DataFrame, district: str, delivery_id: str) -> dg.MaterializeResult:
    """The `lms_sync_results` of a preview run: what would have been sent, nothing sent."""
    per_op = changes.groupby(["entity", "op"]).size() if not changes.empty else pd.Series(dtype="int64")
    table = "| entity | op | changes not sent |\n|---|---|---|\n" + "\n".join(
        f"| {entity} | {op} | {count} |" for (entity, op), count in per_op.items()
    )
    message = f"preview: {len(changes)} changes not sent"
    context.log.info(f"district {district}: delivery {delivery_id} {message} (sync mode is preview in the registry)")
    return dg.MaterializeResult(
        metadata={
            "preview": message,
            "mode": "preview",
            "delivery_id": delivery_id,
            "changes_not_sent": len(changes),
            "batches": 0,
            "created": 0,
            "updated": 0,
            "deactivated": 0,
            "failed": 0,
            "by_entity": dg.MetadataValue.md(table if len(per_op) else "no changes"),
        }
    )
