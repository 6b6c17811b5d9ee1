"""The change set: what must travel to the LMS, judged by the safety checks before anything is written."""


import dagster as dg
import pandas as pd

from rostersync_assets.defs.oneroster.assets import table_key
from rostersync_assets.defs.partitions import OWNERS, districts_partitions
from rostersync_assets.defs.resources import LedgerResource
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.sync.diff import DEACTIVATE_OP, build_change_set, change_counts

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
