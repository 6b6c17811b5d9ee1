"""The ledger: an append-only record of every LMS write, and the sync state it advances.

Both live in one SQLite database (in the home folder) so a batch's ledger rows and the advance of
the sync state commit in ONE transaction: the state moves only for records the LMS acknowledged,
and a run killed between batches resumes from exactly what was acknowledged. The ledger answers
"why is this student in this class?" from delivery, file row and batch to the LMS's answer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from rostersync_assets.sync.push import PlannedChange

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sync_state (
    district TEXT NOT NULL,
    entity TEXT NOT NULL,
    sourced_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    active INTEGER NOT NULL,
    delivery_id TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (district, entity, sourced_id)
);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    run_id TEXT NOT NULL,
    district TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    archive_uri TEXT NOT NULL,
    source_file TEXT NOT NULL,
    source_line INTEGER NOT NULL,
    entity TEXT NOT NULL,
    sourced_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    hash_before TEXT NOT NULL,
    hash_after TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    lms_status TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS ledger_by_record ON ledger (district, sourced_id);
CREATE INDEX IF NOT EXISTS ledger_by_run ON ledger (district, run_id);
"""

ACKNOWLEDGED = frozenset({"created", "updated", "unchanged", "deactivated"})


@dataclass(frozen=True)
class BatchContext:
    """Where a batch came from: run, district, delivery, archived file, entity and idempotency key."""

    run_id: str
    district: str
    delivery_id: str
    archive_uri: str
    entity: str
    idempotency_key: str


class SyncLedger:
    """SQLite-backed ledger and sync state for every district of one installation."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self._path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            with conn:
                yield conn
        finally:
            conn.close()

    def load_state(self, district: str, entity: str) -> pd.DataFrame:
        """What the LMS last acknowledged for one entity of a district: sourcedId, content_hash, active."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT sourced_id, content_hash, active FROM sync_state WHERE district = ? AND entity = ?",
                (district, entity),
            ).fetchall()
        frame = pd.DataFrame(rows, columns=["sourcedId", "content_hash", "active"])
        return frame.astype({"sourcedId": str, "content_hash": str, "active": bool})

    def record_batch(
        self, context: BatchContext, changes: Sequence[PlannedChange], statuses: Sequence[tuple[str, str | None]]
    ) -> int:
        """Append one ledger row per change and advance the state of acknowledged ones; returns acks.

        Record contents never enter the ledger: it keeps ids, hashes and the LMS's answer.

        `statuses` holds the LMS's (status, error) per change, in the same order.
        """
        if len(changes) != len(statuses):
            raise ValueError(f"{len(changes)} changes but {len(statuses)} LMS results")
        now = datetime.now(UTC).isoformat()
        ledger_rows, state_rows = [], []
        for change, (status, error) in zip(changes, statuses):
            ledger_rows.append(
                (now, context.run_id, context.district, context.delivery_id, context.archive_uri,
                 f"{context.entity}.csv", change.line, context.entity, change.sourced_id, change.op,
                 change.hash_before, change.hash_after, context.idempotency_key, status, error)
            )
            if status in ACKNOWLEDGED:
                deactivating = change.op == "deactivate"
                state_rows.append(
                    (context.district, context.entity, change.sourced_id,
                     change.hash_before if deactivating else change.hash_after,
                     0 if deactivating else 1, context.delivery_id, now)
                )
        with self._connect() as conn:
            conn.executemany(
                "INSERT INTO ledger (at, run_id, district, delivery_id, archive_uri, source_file, source_line,"
                " entity, sourced_id, operation, hash_before, hash_after, idempotency_key, lms_status, error)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                ledger_rows,
            )
            conn.executemany(
                "INSERT INTO sync_state (district, entity, sourced_id, content_hash, active, delivery_id, updated_at)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT (district, entity, sourced_id) DO UPDATE SET"
                " content_hash = excluded.content_hash, active = excluded.active,"
                " delivery_id = excluded.delivery_id, updated_at = excluded.updated_at",
                state_rows,
            )
        return len(state_rows)

    def history(self, district: str, sourced_id: str) -> list[dict[str, object]]:
        """Every ledger row of one record of a district, newest first."""
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(
                "SELECT * FROM ledger WHERE district = ? AND sourced_id = ? ORDER BY id DESC",
                (district, sourced_id),
            ).fetchall()
        return [dict(row) for row in rows]

    def run_counts(self, district: str, run_id: str) -> dict[str, int]:
        """LMS statuses of one run's writes, counted (for summaries)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT lms_status, COUNT(*) FROM ledger WHERE district = ? AND run_id = ? GROUP BY lms_status",
                (district, run_id),
            ).fetchall()
        return {status: count for status, count in rows}
