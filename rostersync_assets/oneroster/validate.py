"""Judge a read package: value rules, unique sourcedIds and references, and keep only the rows that pass.

Row-level problems reject the row, not the package (REFERENCE §15): the district's other 99.9% still
syncs. The invariant the rest of rostersync relies on: every `error` diagnostic that names a line
rejects exactly that row, and `ValidationReport.tables` holds the rows no error names.

References are resolved in `spec.SYNCED_FILES` order (parents first) against the target rows that
are still accepted, so a rejected parent rejects its dependants (`reference.rejected`) instead of
letting the LMS receive an enrollment for a user it never got. Checks are vectorised (`isin`,
`explode`, `duplicated`): a district of 100k users and 1M enrollments validates in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from rostersync_assets.oneroster import spec
from rostersync_assets.oneroster.diagnostics import Diagnostic, Severity
from rostersync_assets.oneroster.models import validate_table
from rostersync_assets.oneroster.reader import LINE_COLUMN, RosterPackage

# The asset checks the Dagster layer publishes per entity; every diagnostic belongs to exactly one.
CHECKS: tuple[str, ...] = ("schema", "unique_sourced_ids", "references")
_CHECK_OF_RULE_FAMILY = {"unique": "unique_sourced_ids", "reference": "references"}


def check_of(diagnostic: Diagnostic) -> str:
    """The check a diagnostic belongs to: uniqueness, references, or (file, row and value rules) schema."""
    return _CHECK_OF_RULE_FAMILY.get(diagnostic.rule.split(".", 1)[0], "schema")


@dataclass
class ValidationReport:
    """The verdict on a package.

    tables: per read entity, the rows that passed every check (same columns as the package tables).
    diagnostics: the reader's findings followed by validation's.
    """

    package: RosterPackage
    tables: dict[str, pd.DataFrame]
    diagnostics: list[Diagnostic]

    def findings(self, entity: str, check: str) -> list[Diagnostic]:
        """Diagnostics about `entity`'s file that belong to `check` (one of CHECKS)."""
        if check not in CHECKS:
            raise ValueError(f"unknown check {check!r}; expected one of {CHECKS}")
        file_name = spec.SPECS[entity].file_name
        return [d for d in self.diagnostics if d.file == file_name and check_of(d) == check]

    def rejected_rows(self, entity: str) -> int:
        """Rows of `entity`'s file rejected one by one (a fatal file rejects the whole package instead).

        Non-zero in a bulk file means the snapshot is incomplete: do not deactivate records missing from it.
        """
        return len(_rejected_lines(self.diagnostics, spec.SPECS[entity].file_name))

    @property
    def accepted(self) -> bool:
        """False when anything is fatal: then nothing from this package may be synced."""
        return not any(d.severity == "fatal" for d in self.diagnostics)


def validate_package(package: RosterPackage) -> ValidationReport:
    """Validate every table of a read package; pure, never raises on bad data."""
    diagnostics = list(package.diagnostics)
    row_checked: dict[str, pd.DataFrame] = {}
    for entity, table in package.tables.items():
        found = validate_table(entity, table) + _duplicate_sourced_ids(spec.SPECS[entity], table)
        diagnostics += found
        row_checked[entity] = _without_rejected(table, found)
    accepted: dict[str, pd.DataFrame] = {}
    for file_spec in spec.SYNCED_FILES:
        if file_spec.entity in row_checked:
            # Targets: accepted tables where already final (parents), row-checked ones otherwise.
            found = _reference_findings(file_spec, package, row_checked[file_spec.entity], row_checked | accepted)
            diagnostics += found
            accepted[file_spec.entity] = _without_rejected(row_checked[file_spec.entity], found)
    return ValidationReport(package, accepted, diagnostics)


def _rejected_lines(diagnostics: list[Diagnostic], file_name: str) -> set[int]:
    return {d.line for d in diagnostics if d.severity == "error" and d.file == file_name and d.line is not None}


def _without_rejected(table: pd.DataFrame, found: list[Diagnostic]) -> pd.DataFrame:
    """The table minus the rows an error in `found` names (`found` is about this table's file only)."""
    lines = {d.line for d in found if d.severity == "error"}
    if not lines:
        return table
    return table[~table[LINE_COLUMN].isin(lines)].reset_index(drop=True)


def _row_diagnostics(
    rows: pd.DataFrame, severity: Severity, rule: str, message: str, file_name: str, column: str
) -> list[Diagnostic]:
    """One diagnostic per row of a frame with `line` and `value` columns, in line order."""
    rows = rows.sort_values("line", kind="stable")
    return [
        Diagnostic.create(severity, rule, message, file=file_name, line=int(line), column=column, value=value)
        for line, value in zip(rows["line"], rows["value"])
    ]


def _duplicate_sourced_ids(file_spec: spec.FileSpec, table: pd.DataFrame) -> list[Diagnostic]:
    """Every copy of a repeated sourcedId is an error: rostersync cannot tell which copy is the record."""
    ids = table["sourcedId"]
    repeated = ids.duplicated(keep=False) & (ids != "")
    rows = pd.DataFrame({"line": table.loc[repeated, LINE_COLUMN], "value": ids[repeated]})
    message = "another row of the file has the same sourcedId; every copy is rejected"
    return _row_diagnostics(rows, "error", "unique.sourced_id", message, file_spec.file_name, "sourcedId")


def _reference_findings(
    file_spec: spec.FileSpec, package: RosterPackage, table: pd.DataFrame, targets: dict[str, pd.DataFrame]
) -> list[Diagnostic]:
    """Reference findings for one bulk file's row-checked rows.

    Delta rows may reference records delivered earlier (REFERENCE §3), so only bulk files are checked here.
    """
    if package.modes[file_spec.entity] != "bulk":
        return []
    found: list[Diagnostic] = []
    for reference in file_spec.references:
        if package.modes[reference.target] == "bulk" and reference.target in package.tables:
            found += _unresolved(file_spec, reference, table, package.tables[reference.target], targets)
        elif reference.required:
            found.append(_unchecked(file_spec, reference, package))
    return found


def _unresolved(
    file_spec: spec.FileSpec,
    reference: spec.Reference,
    table: pd.DataFrame,
    delivered: pd.DataFrame,
    targets: dict[str, pd.DataFrame],
) -> list[Diagnostic]:
    """Referenced ids not in the target file (missing) or only on its rejected rows (rejected)."""
    referenced = _referenced_ids(table, reference)
    # One pass over all references against the accepted targets; the rare leftovers are then classified.
    unresolved = referenced[~referenced["value"].isin(targets[reference.target]["sourcedId"])]
    if unresolved.empty:
        return []
    is_delivered = unresolved["value"].isin(delivered["sourcedId"])
    target_file = f"{reference.target}.csv"
    severity: Severity = "error" if reference.required else "warning"
    found = _row_diagnostics(
        unresolved[~is_delivered], severity, "reference.missing",
        f"no row of {target_file} has this sourcedId", file_spec.file_name, reference.column,
    )
    if reference.required:
        found += _row_diagnostics(
            unresolved[is_delivered], "error", "reference.rejected",
            f"the {target_file} row with this sourcedId was rejected", file_spec.file_name, reference.column,
        )
    return found


def _referenced_ids(table: pd.DataFrame, reference: spec.Reference) -> pd.DataFrame:
    """One row (line, value) per referenced id; list cells are split on commas and items trimmed."""
    values = table[reference.column]
    if reference.is_list:
        values = values.str.split(",").explode()
    values = values.str.strip()
    given = values != ""
    return pd.DataFrame(
        {"line": table[LINE_COLUMN].loc[values.index[given]].to_numpy(), "value": values[given].to_numpy()}
    )


def _unchecked(file_spec: spec.FileSpec, reference: spec.Reference, package: RosterPackage) -> Diagnostic:
    """One warning per (file, column): the target is absent, delta, or could not be read."""
    mode = package.modes[reference.target]
    why = "could not be read" if mode == "bulk" else f"is {mode} in this package"
    message = f"{reference.target}.csv {why}, so {reference.column} values were not checked"
    return Diagnostic.create(
        "warning", "reference.unchecked", message, file=file_spec.file_name, column=reference.column
    )
