"""What a district is told about its delivery: a JSON summary, a readable report, and stored diagnostics.

The same `ValidationReport` feeds the Dagster run, `rostersync validate` and the files archived next
to a delivery, so the three must agree; they are all built here from `Diagnostic`s, whose values are
already masked. Nothing in this module reads a table cell: only counts and diagnostics leave it.

The human report is written for a district data steward, not a developer: findings are grouped by
file, then by rule, each rule explained once in plain language (`RULES`), with the first few rows
located by line and column so the steward can open the export and fix it at the source.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rostersync_assets.oneroster import clever, spec
from rostersync_assets.oneroster.diagnostics import RULES, SEVERITIES, Diagnostic
from rostersync_assets.oneroster.spec import LINE_COLUMN
from rostersync_assets.oneroster.validate import ValidationReport

DIAGNOSTICS_JSON = "diagnostics.json"
DIAGNOSTICS_CSV = "diagnostics.csv"
CSV_COLUMNS: tuple[str, ...] = ("severity", "rule", "file", "line", "column", "value", "message")

# Findings without a file (a damaged zip, an unsafe zip entry) are about the delivery as a whole.
PACKAGE_WIDE = "the delivery as a whole"
# A value longer than this is cut in the human report: a 1 MB cell must not flood a terminal or an e-mail.
MAX_SHOWN_VALUE_CHARS = 60
_SEVERITY_ORDER = {severity: rank for rank, severity in enumerate(SEVERITIES)}
# Severity -> (singular, plural) as the report counts them.
_SEVERITY_NOUNS = {
    "fatal": ("fatal finding", "fatal findings"),
    "error": ("error", "errors"),
    "warning": ("warning", "warnings"),
    "fixed": ("fix", "fixes"),
}


def summarize(report: ValidationReport) -> dict[str, Any]:
    """The verdict as plain JSON: version, accepted, per-file mode/rows/rejected, and every diagnostic.

    `rows` counts the file's data rows: those the reader turned into table rows plus those it
    rejected itself (a row too wide), so `rejected <= rows` holds and a steward can compute the
    share; a file that could not be read has 0.
    """
    package = report.package
    files = {}
    for entity, mode in package.modes.items():
        file_name = spec.SPECS[entity].file_name
        rows = _data_rows(report.diagnostics, file_name, package.tables.get(entity))
        files[file_name] = {"mode": mode, "rows": rows, "rejected": report.rejected_rows(entity)}
    return {
        "version": package.version,
        "accepted": report.accepted,
        "files": files,
        "diagnostics": [diagnostic.to_dict() for diagnostic in report.diagnostics],
    }


def _data_rows(diagnostics: Sequence[Diagnostic], file_name: str, table: pd.DataFrame | None) -> int:
    """Rows read into the table plus the rejected lines that never reached it (the reader's own rejects)."""
    read_lines = table[LINE_COLUMN].to_numpy() if table is not None else np.empty(0, dtype=np.int64)
    rejected = {d.line for d in diagnostics if d.severity == "error" and d.file == file_name and d.line is not None}
    return len(read_lines) + int((~np.isin(np.fromiter(rejected, np.int64, len(rejected)), read_lines)).sum())


def format_human(report: ValidationReport, max_rows_per_rule: int = 5) -> str:
    """A plain-text report a data steward can act on, ending with a one-line verdict."""
    summary = summarize(report)
    lines = [_title(summary), *_file_table(summary["files"], read=report.package.tables)]
    for file_name, findings in _by_file(report.diagnostics).items():
        lines += ["", f"{file_name}: {_counts(findings)}"]
        for rule, rule_findings in _by_rule(findings).items():
            lines += _rule_section(rule, rule_findings, max_rows_per_rule)
    lines += ["", verdict(report)]
    return "\n".join(lines) + "\n"


def verdict(report: ValidationReport) -> str:
    """One line: `accepted: 3 warnings, 2 fixes` or `rejected: 1 fatal finding in users.csv; ...`.

    An accepted delivery may still have rejected rows (errors); the line says how many, because a
    bulk snapshot with rejected rows is incomplete and the steward should resend it.
    """
    if report.accepted:
        rejected = sum(report.rejected_rows(entity) for entity in report.package.modes)
        rows = f"; {rejected:,} row(s) rejected" if rejected else ""
        return f"accepted: {_counts(report.diagnostics) or 'no findings'}{rows}"
    fatal = [d for d in report.diagnostics if d.severity == "fatal"]
    others = _counts(d for d in report.diagnostics if d.severity != "fatal")
    if fatal:
        reason = f"{_counts(fatal)} in {', '.join(_by_file(fatal))}"
    else:
        limit = report.profile.max_rejected_share
        reason = ", ".join(
            f"{report.rejected_rows(e):,} of {len(report.package.tables[e]):,} {e} rows rejected ({report.rejected_share(e):.0%} > {limit:.0%})"
            for e in report.held_entities()
        )
    return f"rejected: {reason}; nothing from this delivery is synced" + (f"; also {others}" if others else "")


def write_diagnostics(diagnostics: Sequence[Diagnostic], folder: Path) -> tuple[Path, Path]:
    """Store the diagnostics as `diagnostics.json` (a list of objects) and `diagnostics.csv`; returns both paths.

    JSON is for tools and re-loading, CSV for the steward's spreadsheet; both hold the same masked values.
    """
    folder.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = folder / DIAGNOSTICS_JSON, folder / DIAGNOSTICS_CSV
    json_path.write_bytes(diagnostics_json(diagnostics))
    csv_path.write_bytes(diagnostics_csv(diagnostics))
    return json_path, csv_path


def diagnostics_json(diagnostics: Sequence[Diagnostic]) -> bytes:
    """The diagnostics as a JSON list of objects (for tools and for loading them again)."""
    return (json.dumps([d.to_dict() for d in diagnostics], indent=1) + "\n").encode("utf-8")


def diagnostics_csv(diagnostics: Sequence[Diagnostic]) -> bytes:
    """The diagnostics as CSV (for the data steward's spreadsheet); values are masked as in JSON."""
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(d.to_dict() for d in diagnostics)
    return stream.getvalue().encode("utf-8")


# --- building blocks of the human report ----------------------------------------------------------


def _title(summary: dict[str, Any]) -> str:
    if summary["version"] == clever.VERSION:
        kind = "Clever delivery (converted to OneRoster 1.1)"
    else:
        kind = f"OneRoster {summary['version'] or '(version unknown)'} delivery"
    return f"{kind}: {'accepted' if summary['accepted'] else 'rejected'}"


def _file_table(files: dict[str, dict[str, Any]], read: Mapping[str, object]) -> list[str]:
    """One line per synced file: how it was declared, how many rows were judged and rejected.

    A declared file that could not be read says so: "0 rows" would read as "the file is empty".
    """
    width = max(map(len, files), default=0)
    lines = []
    for name, entry in files.items():
        if entry["mode"] == "absent":
            counts = ""
        elif spec.entity_of_file(name) not in read:
            counts = "not read (see below)"
        else:
            counts = f"{entry['rows']:>9,} rows  {entry['rejected']:>9,} rejected"
        lines.append(f"  {name:<{width}}  {entry['mode']:<6}  {counts}".rstrip())
    return lines


def _by_file(diagnostics: Iterable[Diagnostic]) -> dict[str, list[Diagnostic]]:
    """Findings per file: the manifest, the synced files parents first, other files by name, then the rest."""
    grouped: dict[str, list[Diagnostic]] = {}
    for diagnostic in diagnostics:
        grouped.setdefault(diagnostic.file or PACKAGE_WIDE, []).append(diagnostic)
    return dict(sorted(grouped.items(), key=lambda item: _file_rank(item[0])))


def _file_rank(file_name: str) -> tuple[int, str]:
    if file_name == spec.MANIFEST_FILE:
        return 0, ""
    if file_name == PACKAGE_WIDE:
        return len(spec.ENTITIES) + 2, ""
    entity = spec.entity_of_file(file_name)
    return (1 + spec.ENTITIES.index(entity), "") if entity else (len(spec.ENTITIES) + 1, file_name)


def _by_rule(findings: list[Diagnostic]) -> dict[str, list[Diagnostic]]:
    """Findings per rule, the most severe rules first (fatal before error, warning, fixed)."""
    grouped: dict[str, list[Diagnostic]] = {}
    for diagnostic in findings:
        grouped.setdefault(diagnostic.rule, []).append(diagnostic)
    worst = {rule: min(_SEVERITY_ORDER[d.severity] for d in group) for rule, group in grouped.items()}
    return dict(sorted(grouped.items(), key=lambda item: worst[item[0]]))


def _rule_section(rule: str, findings: list[Diagnostic], max_rows: int) -> list[str]:
    """`rule: counts`, its plain-language explanation, then the first `max_rows` findings located."""
    lines = [f"  {rule}: {_counts(findings)}", f"    {RULES[rule]}"]
    lines += [f"    - {_located(diagnostic)}" for diagnostic in findings[:max_rows]]
    if len(findings) > max_rows:
        lines.append(f"    - ... and {len(findings) - max_rows:,} more (all of them are in the JSON output)")
    return lines


def _located(diagnostic: Diagnostic) -> str:
    """`line 14, column role, value 'Teacher': message` (only the parts the finding has)."""
    parts = [
        f"line {diagnostic.line}" if diagnostic.line is not None else "",
        f"column {diagnostic.column}" if diagnostic.column is not None else "",
        f"value {_shown(diagnostic.value)}" if diagnostic.value is not None else "",
    ]
    where = ", ".join(filter(None, parts))
    return f"{where}: {diagnostic.message}" if where else diagnostic.message


def _shown(value: str) -> str:
    """The (already masked) value quoted with escapes visible, cut when it is too long to read."""
    if len(value) <= MAX_SHOWN_VALUE_CHARS:
        return repr(value)
    return f"{value[:MAX_SHOWN_VALUE_CHARS]!r}... ({len(value):,} chars)"


def _counts(diagnostics: Iterable[Diagnostic]) -> str:
    """`1 fatal finding, 2 errors, 3 warnings, 1 fix`, most severe first, zero counts left out."""
    counts = Counter(diagnostic.severity for diagnostic in diagnostics)
    return ", ".join(
        f"{counts[severity]:,} {_SEVERITY_NOUNS[severity][counts[severity] != 1]}"
        for severity in SEVERITIES
        if counts[severity]
    )
