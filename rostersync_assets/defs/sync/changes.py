"""The change set: what must travel to the LMS, judged by the safety checks before anything is written.

Three blocking checks (deactivation limit, update limit, id churn; rules in sync/safety.py) hold a
destructive change set. Only an approval that names the delivery releases it: `rostersync approve
DISTRICT DELIVERY_ID --by NAME`, or this asset's run config (`approve_delivery`, `approved_by`), both
recorded in the ledger. The verdict is kept beside the tables so `approve` can show what it releases.
"""

from functools import partial

import dagster as dg
import pandas as pd

from rostersync_assets.connectors.ledger import Approval, SyncLedger
from rostersync_assets.defs.oneroster.assets import table_key
from rostersync_assets.defs.partitions import OWNERS, districts_partitions
from rostersync_assets.defs.resources import HomeResource, LedgerResource
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.sync.diff import DEACTIVATE_OP, build_change_set
from rostersync_assets.sync.safety import DEACTIVATION, ID_CHURN, UPDATE, SafetyPolicy, SafetyVerdict, ScopeCounts, evaluate
from rostersync_assets.sync.verdicts import approval_summary, save_judged_delivery

# check name, policy field holding its limit, the verdict's count column, what the check blocks
CHECKS = {
    DEACTIVATION: (
        "roster_changes_within_deactivation_limit", "max_deactivated_share", "deactivate",
        "Blocks the sync when more than the district's max_deactivated_share (default 10 %) of an entity's active "
        "records would be deactivated, district-wide or in one school of at least min_school_size records "
        "(an empty, truncated or re-keyed file must never empty the LMS).",
    ),
    UPDATE: (
        "roster_changes_within_update_limit", "max_updated_share", "update",
        "Blocks the sync when more than the district's max_updated_share (default 75 %) of an entity's active "
        "records would be updated, district-wide or in one school (a shifted column, a re-encoded export).",
    ),
    ID_CHURN: (
        "roster_changes_without_id_churn", "max_id_churn", "id_churn",
        "Blocks the sync when more than the district's max_id_churn (default 1 %) of an entity's active records "
        "would be deactivated and re-created under a new sourcedId with the same natural key (the LMS would lose "
        "their history).",
    ),
}
SCHOOL_ROWS = 25  # schools listed in check metadata, most affected first


class RosterChangesConfig(dg.Config):
    """Release a held change set at launch: name the delivery being approved (as shown by the held
    checks) and who approves it. Valid only for that delivery; recorded in the ledger with the run id."""

    approve_delivery: str = ""
    approved_by: str = ""


def _apply_run_config_approval(
    context: dg.AssetExecutionContext, config: RosterChangesConfig, store: SyncLedger, district: str, delivery_id: str, verdict: SafetyVerdict
) -> None:
    if not config.approve_delivery:
        return
    if config.approve_delivery != delivery_id:
        raise dg.Failure(
            f"district {district}: run config approves delivery {config.approve_delivery} but this run diffs delivery "
            f"{delivery_id}; an approval releases only the delivery it names"
        )
    if not config.approved_by.strip():
        raise dg.Failure(f"district {district}: run config approves delivery {delivery_id} without approved_by (who approves it)")
    if store.approval_for(district, delivery_id) is None:
        store.record_approval(district, delivery_id, config.approved_by.strip(), approval_summary(verdict), run_id=context.run.run_id)


def _counts_md(rows: list[ScopeCounts], with_school: bool) -> str:
    head = "| entity |" + (" school |" if with_school else "") + " active before | create | update | reactivate | deactivate | id churn |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in rows:
        school = f" {c.school} |" if with_school else ""
        lines.append(f"| {c.entity} |{school} {c.active_before} | {c.create} | {c.update} | {c.reactivate} | {c.deactivate} | {c.id_churn} |")
    return "\n".join(lines)


def _school_md(verdict: SafetyVerdict, column: str) -> str:
    """The schools most affected by one kind of change (share of their active records), at most 25."""
    touched = [c for c in verdict.school_counts() if getattr(c, column)]
    if not touched:
        return "no school affected"
    touched.sort(key=lambda c: (-getattr(c, column) / max(c.active_before, 1), c.entity, c.school))
    more = f"\n\n{len(touched) - SCHOOL_ROWS} more school row(s) not shown" if len(touched) > SCHOOL_ROWS else ""
    return _counts_md(touched[:SCHOOL_ROWS], with_school=True) + more


def _check_result(kind: str, verdict: SafetyVerdict, policy: SafetyPolicy, delivery_id: str, approval: Approval | None) -> dg.AssetCheckResult:
    name, limit_field, column, _ = CHECKS[kind]
    holds = verdict.holds_of(kind)
    entity_rows = verdict.entity_counts()
    metadata: dict[str, object] = {
        "limit": getattr(policy, limit_field),
        "min_school_size": policy.min_school_size,
        "holds": len(holds),
        "max_share": max((getattr(c, column) / c.active_before for c in entity_rows if c.active_before), default=0.0),
        "held": dg.MetadataValue.md("\n".join(f"- {h.describe()}" for h in holds) or "nothing held"),
        "sample_ids": ", ".join(holds[0].sample) if holds else "none",
        "counts_by_entity": dg.MetadataValue.md(_counts_md(entity_rows, with_school=False)),
        "counts_by_school": dg.MetadataValue.md(_school_md(verdict, column)),
        "delivery_id": delivery_id,
    }
    if verdict.held and approval is not None:
        metadata |= {"approved_by": approval.approved_by, "approved_at": approval.approved_at, "approval_run_id": approval.run_id or "cli"}
    return dg.AssetCheckResult(
        check_name=name, passed=not holds or approval is not None, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata
    )


@dg.asset(
    partitions_def=districts_partitions,
    group_name="sync",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    io_manager_key="roster_io_manager",
    ins={entity: dg.AssetIn(key=table_key(entity)) for entity in ENTITIES},
    check_specs=[
        dg.AssetCheckSpec(name, asset="roster_changes", blocking=True, partitions_def=districts_partitions, description=description)
        for name, _, _, description in CHECKS.values()
    ],
    description=(
        "Creates, updates, reactivations and deactivations per entity between the validated tables and "
        "what the LMS last acknowledged for this district; upserts parents first, deactivations children first. "
        "Held by its safety checks until an approval names the delivery."
    ),
)
def roster_changes(
    context: dg.AssetExecutionContext, config: RosterChangesConfig, home: HomeResource, ledger: LedgerResource, **tables: pd.DataFrame
):
    district = home.district(context.partition_key)
    store = ledger.open()  # one ledger per run, closed by the resource
    states = {entity: store.load_state(district.slug, entity) for entity in ENTITIES}
    modes = {entity: table.attrs.get("oneroster_mode", "absent") for entity, table in tables.items()}
    # The state leaves natural-key digests in the ledger: the diff asks it for those of the records it deactivates.
    changes = build_change_set(tables, modes, states, partial(store.natural_keys, district.slug))
    # Rows rejected by validation are missing from a bulk table, yet they were delivered: never read
    # their absence as a removal.
    held_back = [e for e, t in tables.items() if t.attrs.get("rejected_rows", 0)]
    if held_back:
        changes = changes[~(changes["entity"].isin(held_back) & changes["op"].eq(DEACTIVATE_OP))].reset_index(drop=True)
    delivery_id = next(iter(tables.values())).attrs.get("delivery_id", "")
    changes.attrs = {"delivery_id": delivery_id}
    verdict = evaluate(changes, states, district.sync)
    _apply_run_config_approval(context, config, store, district.slug, delivery_id, verdict)
    approval = store.approval_for(district.slug, delivery_id)
    save_judged_delivery(home.paths.tables_dir, district.slug, delivery_id, context.run.run_id, district.sync, verdict)
    if verdict.held:
        released = f"released by {approval.approved_by}'s approval of {approval.approved_at}" if approval else (
            f"held: approve with `rostersync approve {district.slug} {delivery_id} --by NAME` or run config "
            f"approve_delivery={delivery_id}, then run the sync again"
        )
        context.log.warning(f"district {district.slug}: delivery {delivery_id} {released}:\n{verdict.summary()}")
    counts = verdict.entity_counts()
    yield dg.Output(
        changes,
        metadata={
            "dagster/row_count": len(changes),
            "delivery_id": delivery_id,
            "mode": district.sync.mode,
            "creates": sum(c.create for c in counts),
            "updates": sum(c.update + c.reactivate for c in counts),
            "deactivations": sum(c.deactivate for c in counts),
            "by_entity": dg.MetadataValue.md(_counts_md(counts, with_school=False)),
            "deactivations_held_back_for": ", ".join(held_back) or "none",
            "safety": "approved" if verdict.held and approval else ("held" if verdict.held else "within limits"),
        },
    )
    for kind in CHECKS:
        yield _check_result(kind, verdict, district.sync, delivery_id, approval)
