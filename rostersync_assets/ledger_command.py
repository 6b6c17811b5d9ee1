"""`rostersync ledger why|runs`: answer, from the ledger alone, why a record is in the LMS as it is.

`why` follows one record back, newest first: delivery → archived object (URI + sha256) → file row →
change (operation, content hash before → after) → LMS batch (idempotency key) → the LMS's answer,
plus any approval that released the delivery. `runs` lists a district's syncs with counts per LMS
status. The ledger holds ids, hashes and answers only, so nothing printed here is personal data.

The ledger is `--ledger-url`, else ROSTERSYNC_LEDGER_URL, else the home's SQLite file. A URL may hold
a password: only its masked form is ever printed. Exit codes: 0 found, 1 nothing recorded (or the
ledger cannot be read), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from datetime import datetime
from typing import TextIO

import sqlalchemy as sa

from rostersync_assets.connectors.ledger import Approval, SyncLedger, ledger_url, masked
from rostersync_assets.home import RostersyncHome

LEDGER_URL_ENV = "ROSTERSYNC_LEDGER_URL"
FOUND, NOT_FOUND = 0, 1
# The statuses shown first, in the order a sync produces them; any other status follows.
_STATUS_ORDER = ("created", "updated", "unchanged", "deactivated", "error")


class LedgerUnavailable(Exception):
    """The ledger named cannot be opened; the message names it (masked) and why."""


def run_ledger(
    action: str, *, home: str | None, url_option: str | None, district: str, sourced_id: str | None,
    as_json: bool, out: TextIO, err: TextIO,
) -> int:
    """`why` (needs `sourced_id`) or `runs` on the chosen ledger; returns the exit code."""
    try:
        ledger = open_ledger(home, url_option)
    except LedgerUnavailable as error:
        print(f"rostersync ledger {action}: {error}", file=err)
        return NOT_FOUND
    with ledger:
        if action == "why":
            return run_why(ledger, district, sourced_id or "", as_json=as_json, out=out, err=err)
        return run_runs(ledger, district, as_json=as_json, out=out, err=err)


def open_ledger(home: str | None, url_option: str | None) -> SyncLedger:
    """The ledger a command reads: the URL given, else the environment's, else the home's SQLite file.

    A home's file that does not exist yet is an error rather than a new empty ledger: a mistyped
    `--home` must not look like "nothing was ever synced".
    """
    given = url_option or os.environ.get(LEDGER_URL_ENV)
    if not given:
        path = RostersyncHome.resolve(home).ledger_path
        if not path.exists():
            raise LedgerUnavailable(f"no ledger at {path}: the home's first sync creates it (or give --ledger-url)")
        given = str(path)
    try:
        url = ledger_url(given)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        raise LedgerUnavailable(
            "the ledger URL is not a SQLAlchemy URL (dialect+driver://user:password@host:port/database)"
        ) from None
    try:
        return SyncLedger(url)
    except (sa.exc.SQLAlchemyError, ValueError) as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise LedgerUnavailable(f"cannot open the ledger {masked(url)}: {reason}") from None


def run_why(ledger: SyncLedger, district: str, sourced_id: str, *, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Print the chain of every ledger entry of one record, newest first; 1 when it has none."""
    entries = ledger.history(district, sourced_id)
    if not entries:
        print(f"rostersync ledger why: district {district}: no ledger entry for sourcedId {sourced_id!r} "
              f"in the ledger {masked(ledger.url)} (check the district and the id; records reach the ledger when synced)", file=err)
        return NOT_FOUND
    approvals: dict[str, list[Approval]] = defaultdict(list)
    for approval in ledger.approvals(district):
        approvals[approval.delivery_id].append(approval)
    chain = [_link(entry, approvals.get(str(entry["delivery_id"]), [])) for entry in entries]
    if as_json:
        out.write(json.dumps({"district": district, "sourced_id": sourced_id, "chain": chain}, indent=2) + "\n")
    else:
        out.write(_format_chain(district, sourced_id, chain))
    return FOUND


def run_runs(ledger: SyncLedger, district: str, *, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Print the district's syncs, newest first, with counts per LMS status; 1 when there are none."""
    runs = ledger.runs(district)
    if not runs:
        print(f"rostersync ledger runs: no sync of district {district} recorded in the ledger {masked(ledger.url)}", file=err)
        return NOT_FOUND
    if as_json:
        out.write(json.dumps({"district": district, "runs": runs}, indent=2) + "\n")
    else:
        out.write(_format_runs(district, runs))
    return FOUND


def _link(entry: dict[str, object], approvals: list[Approval]) -> dict[str, object]:
    """One ledger row as the chain the user follows, from the delivery to the LMS's answer."""
    return {
        "at": entry["at"],
        "run_id": entry["run_id"],
        "entity": entry["entity"],
        "delivery_id": entry["delivery_id"],
        "archive": {"uri": entry["archive_uri"], "sha256": entry["archive_sha256"]},
        "file_row": {"file": entry["source_file"], "line": entry["source_line"]},
        "change": {"operation": entry["operation"], "hash_before": entry["hash_before"], "hash_after": entry["hash_after"]},
        "lms_batch": {"idempotency_key": entry["idempotency_key"]},
        "result": {"status": entry["lms_status"], "error": entry["error"]},
        "approvals": [
            {"approved_by": a.approved_by, "approved_at": a.approved_at, "run_id": a.run_id, "summary": a.summary}
            for a in approvals
        ],
    }


def _when(iso: object) -> str:
    return datetime.fromisoformat(str(iso)).strftime("%Y-%m-%d %H:%M:%S UTC")


def _file_row(row: dict) -> str:
    """`file:line`; line 0 is how the diff marks a record the delivery no longer contains."""
    return f"{row['file']}:{row['line']}" if row["line"] > 0 else f"(absent from {row['file']})"


def _format_chain(district: str, sourced_id: str, chain: list[dict]) -> str:
    lines = [f"district {district}, sourcedId {sourced_id}: {len(chain)} ledger entr{'y' if len(chain) == 1 else 'ies'}, newest first"]
    for link in chain:
        change, archive, result = link["change"], link["archive"], link["result"]
        lines += [
            "",
            f"{_when(link['at'])}  run {link['run_id']}  ({link['entity']})",
            f"  delivery   {link['delivery_id']}",
            f"  archive    {archive['uri'] or '(not recorded)'}  sha256 {archive['sha256'] or '(not recorded)'}",
            f"  file row   {_file_row(link['file_row'])}",
            f"  change     {change['operation']}  {change['hash_before'] or '-'} -> {change['hash_after'] or '-'}",
            f"  LMS batch  {link['lms_batch']['idempotency_key']}",
            f"  result     {result['status']}" + (f": {result['error']}" if result["error"] else ""),
        ]
        lines += [
            f"  approval   by {a['approved_by']} at {_when(a['approved_at'])}" + (f" (run {a['run_id']})" if a["run_id"] else " (CLI)")
            for a in link["approvals"]
        ]
    return "\n".join(lines) + "\n"


def _format_runs(district: str, runs: list[dict]) -> str:
    seen = {status for run in runs for status in run["counts"]}
    statuses = [s for s in _STATUS_ORDER if s in seen] + sorted(seen - set(_STATUS_ORDER))
    header = ["run id", "delivery", "started", "finished", *statuses]
    rows = [
        [str(run["run_id"]), str(run["delivery_id"]), _when(run["started_at"]), _when(run["finished_at"]),
         *(str(run["counts"].get(s, 0)) for s in statuses)]
        for run in runs
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    table = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    return f"district {district}: {len(runs)} sync(s), newest first\n" + "\n".join(table) + "\n"


def cmd_ledger(args: argparse.Namespace) -> int:
    """The `rostersync ledger` subcommand's entry point (parser in cli.py)."""
    sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    return run_ledger(
        args.action, home=args.home, url_option=args.ledger_url, district=args.district,
        sourced_id=getattr(args, "sourced_id", None), as_json=args.json, out=sys.stdout, err=sys.stderr,
    )
