"""OneRoster tables: the archived delivery parsed and validated, one asset per entity, with blocking checks.

The checks run inside the asset that produces the tables (their findings come from the same pass),
and they block: a failed check stops the run before `roster_changes`, so nothing reaches the LMS.
"""


from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime

import dagster as dg
import pandas as pd

from rostersync_assets.defs.partitions import OWNERS, districts_partitions
from rostersync_assets.defs.resources import ArchiveResource, HomeResource, LedgerResource
from rostersync_assets.oneroster.diagnostics import Diagnostic
from rostersync_assets.oneroster.formats import read_delivery
from rostersync_assets.oneroster.reader import RosterPackage
from rostersync_assets.oneroster.report import diagnostics_csv, diagnostics_json
from rostersync_assets.oneroster.spec import ENTITIES, SPECS, entity_of_file
from rostersync_assets.oneroster.validate import ValidationReport, validate_package

SAMPLE_ROWS = 10

CHECK_NAMES = {
    "schema": "{entity}_schema_valid",
    "unique_sourced_ids": "{entity}_sourced_ids_unique",
    "references": "{entity}_references_resolve",
}
CHECK_DESCRIPTIONS = {
    "schema": "The package is readable and the file's rows have the required values, enums, dates, booleans and ids.",
    "unique_sourced_ids": "Every sourcedId appears once in the file.",
    "references": "The records a row names (classes, users, orgs, sessions) exist in the package.",
}
BLOCKING_RULE = (
    " Blocks the sync on a fatal finding, or when the check's rules rejected rows and more than the district's"
    " max_rejected_share of the file's rows is rejected (rows within the share are quarantined: left out, listed)."
)


def table_key(entity: str) -> dg.AssetKey:
    return dg.AssetKey(["oneroster", entity])


def check_name(entity: str, check: str) -> str:
    return CHECK_NAMES[check].format(entity=entity)


def _column_schema(entity: str) -> dg.TableSchema:
    spec = SPECS[entity]
    return dg.TableSchema(
        columns=[
            dg.TableColumn(c, "string", constraints=dg.TableColumnConstraints(nullable=c not in spec.required, unique=c == "sourcedId"))
            for c in spec.columns
        ]
    )


def _findings_metadata(findings: Sequence[Diagnostic]) -> dict[str, object]:
    """Counts per rule and a sample of at most 10 findings; values are already masked for personal columns."""
    by_rule = Counter(d.rule for d in findings)
    metadata: dict[str, object] = {"findings": len(findings), **{f"rule {rule}": n for rule, n in sorted(by_rule.items())}}
    if findings:
        rows = "\n".join(
            f"| {d.severity} | {d.rule} | {d.file or ''} | {d.line or ''} | {d.column or ''} | {d.value or ''} |"
            for d in findings[:SAMPLE_ROWS]
        )
        metadata["sample"] = dg.MetadataValue.md("| severity | rule | file | line | column | value |\n|---|---|---|---|---|---|\n" + rows)
    return metadata


def _package_fatals(report: ValidationReport) -> list[Diagnostic]:
    """Fatal findings about the package as a whole (no manifest, unsupported version, unknown files)."""
    return [d for d in report.diagnostics if d.severity == "fatal" and entity_of_file(d.file or "") is None]


def _check_results(report: ValidationReport, entity: str, diagnostics_uri: str) -> Iterator[dg.AssetCheckResult]:
    rows = len(report.package.tables.get(entity, ()))
    rejected = report.rejected_rows(entity)
    held = entity in report.held_entities()
    package_fatals = _package_fatals(report)
    for check in CHECK_NAMES:
        # A rejected package fails every schema check: its tables are empty, not trustworthy.
        findings = report.findings(entity, check) + (package_fatals if check == "schema" else [])
        fatal = any(d.severity == "fatal" for d in findings)
        errors = [d for d in findings if d.severity == "error"]
        # The share is the entity's (all its rejected rows), judged by the check whose rules rejected them.
        passed = not fatal and not (errors and held)
        yield dg.AssetCheckResult(
            asset_key=table_key(entity),
            check_name=check_name(entity, check),
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rows": rows,
                "rejected_rows": rejected,
                "max_rejected_share": report.profile.max_rejected_share,
                "diagnostics": dg.MetadataValue.path(diagnostics_uri),
                **_findings_metadata(findings),
            },
        )


@dg.multi_asset(
    outs={
        entity: dg.AssetOut(
            key=table_key(entity),
            io_manager_key="roster_io_manager",
            group_name="oneroster",
            kinds={"pandas", "parquet"},
            owners=OWNERS,
            description=f"Validated OneRoster {SPECS[entity].file_name} rows of the district's latest delivery "
            "(rows with errors excluded); `_line` is the row's line in the delivered file.",
            metadata={"dagster/column_schema": _column_schema(entity)},
        )
        for entity in ENTITIES
    },
    partitions_def=districts_partitions,
    check_specs=[
        dg.AssetCheckSpec(
            check_name(entity, check),
            asset=table_key(entity),
            blocking=True,
            partitions_def=districts_partitions,
            description=CHECK_DESCRIPTIONS[check] + BLOCKING_RULE,
        )
        for entity in ENTITIES
        for check in CHECK_NAMES
    ],
)
def oneroster_tables(
    context: dg.AssetExecutionContext,
    archived_roster_delivery: dict,
    archive: ArchiveResource,
    home: HomeResource,
    ledger: LedgerResource,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Parse the archived copy (not the staging copy: what we judge is what we keep), read the way the
    district's profile says, with delta references resolved against what the LMS already holds."""
    district = home.district(context.partition_key)
    store = archive.open()
    slug, delivery_id = archived_roster_delivery["district"], archived_roster_delivery["delivery_id"]
    delivered_at = datetime.fromisoformat(archived_roster_delivery["delivered_at"])
    files = {f["name"]: store.read(slug, delivery_id, delivered_at, f["name"]) for f in archived_roster_delivery["files"]}
    package = read_delivery(files, district.profile)
    report = validate_package(package, profile=district.profile, previous=_previous_for_delta(package, ledger, slug))
    diagnostics_uri = store.attach_report(slug, delivery_id, delivered_at, "diagnostics.json", diagnostics_json(report.diagnostics))
    store.attach_report(slug, delivery_id, delivered_at, "diagnostics.csv", diagnostics_csv(report.diagnostics))
    context.log.info(
        f"district {slug}: delivery {delivery_id} validated: {len(report.diagnostics)} finding(s), "
        f"accepted={report.accepted}; diagnostics at {diagnostics_uri}"
    )
    for entity in ENTITIES:
        table = report.tables.get(entity)
        if table is None:
            table = pd.DataFrame({c: pd.Series(dtype=str) for c in (*SPECS[entity].columns, "_line")})
        table = table.copy()
        mode = report.package.modes.get(entity, "absent")
        table.attrs = {
            "oneroster_mode": mode,
            "delivery_id": archived_roster_delivery["delivery_id"],
            "rejected_rows": report.rejected_rows(entity),
        }
        yield dg.Output(
            table,
            output_name=entity,
            metadata={
                "dagster/row_count": len(table),
                "rejected_rows": report.rejected_rows(entity),
                "mode": mode,
                "delivery_id": archived_roster_delivery["delivery_id"],
            },
        )
    for entity in ENTITIES:
        yield from _check_results(report, entity, diagnostics_uri)


def _previous_for_delta(package: RosterPackage, ledger: LedgerResource, district: str) -> dict[str, pd.DataFrame] | None:
    """What delta rows may refer to: the records the LMS holds as active. Only a delta package needs
    it, so a bulk night (the usual case) does not read millions of sync-state rows for nothing."""
    if "delta" not in package.modes.values():
        return None
    state = ledger.open()
    return {entity: _active_ids(state.load_state(district, entity)) for entity in ENTITIES}


def _active_ids(state: pd.DataFrame) -> pd.DataFrame:
    """The records of an entity the LMS holds as active: what a delta delivery may refer to."""
    return state.loc[state["active"], ["sourcedId"]].reset_index(drop=True)
