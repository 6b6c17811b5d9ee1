"""The ledger: an append-only record of every LMS write and approval, and the sync state it advances.

All three tables live in one database so a batch's ledger rows and the advance of the sync state
commit in ONE transaction: the state moves only for records the LMS acknowledged, and a run killed
between batches resumes from exactly what was acknowledged. The ledger answers "why is this student
in this class?" from delivery, archived file and row to batch and the LMS's answer.

The database is a SQLite file (WAL) by default and any SQLAlchemy URL in production; the code runs
on SQLite and PostgreSQL, the two dialects the tests exercise (the state's upsert is dialect SQL).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psycopg
import pyarrow as pa
import sqlalchemy as sa
from adbc_driver_postgresql import dbapi as adbc_postgresql
from sqlalchemy.dialects import postgresql, sqlite

from rostersync_assets.sync.push import PlannedChange

ACKNOWLEDGED = frozenset({"created", "updated", "unchanged", "deactivated"})
SUPPORTED_DIALECTS = ("sqlite", "postgresql")
# What load_state returns: the natural-key digest stays in the database (see load_state).
STATE_COLUMNS = ["sourcedId", "content_hash", "active", "school"]
_SQLITE_CHUNK_ROWS = 250_000
# sourcedIds per natural-key query: well under SQLite's 32,766 bound parameters.
_LOOKUP_IDS = 5_000

_metadata = sa.MetaData()
# SQLite wants INTEGER for its rowid alias; PostgreSQL gets a 64-bit identity (the ledger only grows).
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

sync_state = sa.Table(
    "sync_state",
    _metadata,
    sa.Column("district", sa.Text, primary_key=True),
    sa.Column("entity", sa.Text, primary_key=True),
    sa.Column("sourced_id", sa.Text, primary_key=True),
    sa.Column("content_hash", sa.Text, nullable=False),
    sa.Column("active", sa.Integer, nullable=False),
    sa.Column("delivery_id", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
    sa.Column("school", sa.Text, nullable=False, server_default=""),
    sa.Column("natural_key", sa.Text, nullable=False, server_default=""),
)

# The ledger is two append-only tables: a row per batch (where it came from, its idempotency key) and
# a row per record of the batch (file row, change, LMS result). One wide row per record repeated the
# batch's ten columns 500 times and kept three B-trees per record: the split halves both the bytes
# and the time of a batch's write. The view `ledger` (below) joins them back into one row per record.
ledger_batches = sa.Table(
    "ledger_batches",
    _metadata,
    sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("district", sa.Text, nullable=False),
    sa.Column("delivery_id", sa.Text, nullable=False),
    sa.Column("archive_uri", sa.Text, nullable=False),
    sa.Column("archive_sha256", sa.Text, nullable=False),
    sa.Column("entity", sa.Text, nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=False),
    sa.Index("ledger_batches_by_run", "district", "run_id"),
    sqlite_autoincrement=True,
)

ledger_entries = sa.Table(
    "ledger_entries",
    _metadata,
    # ledger_batches.id. Not declared a FOREIGN KEY: PostgreSQL would check it with a trigger per row, and
    # every entry is written in the transaction that writes its batch row, from that row's returned id.
    sa.Column("batch_id", _ROW_ID, primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),  # the record's place in the batch's request
    sa.Column("source_file", sa.Text, nullable=False),
    sa.Column("source_line", sa.Integer, nullable=False),
    sa.Column("sourced_id", sa.Text, nullable=False),
    sa.Column("operation", sa.Text, nullable=False),
    sa.Column("hash_before", sa.Text, nullable=False),
    sa.Column("hash_after", sa.Text, nullable=False),
    sa.Column("lms_status", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Index("ledger_entries_by_record", "sourced_id"),
    # SQLite: the rows are stored in their primary key's B-tree (batch after batch, so appended), not
    # in a rowid table plus a key index.
    sqlite_with_rowid=False,
)

# One row per record with its batch's columns: what `ledger why`, `ledger runs` and dashboards read.
# Defined once here; created in the database as the view `ledger` and queried as a subquery.
LEDGER_ROWS = sa.select(
    ledger_entries.c.batch_id, ledger_entries.c.position, ledger_batches.c.at, ledger_batches.c.run_id,
    ledger_batches.c.district, ledger_batches.c.delivery_id, ledger_batches.c.archive_uri,
    ledger_batches.c.archive_sha256, ledger_entries.c.source_file, ledger_entries.c.source_line,
    ledger_batches.c.entity, ledger_entries.c.sourced_id, ledger_entries.c.operation, ledger_entries.c.hash_before,
    ledger_entries.c.hash_after, ledger_batches.c.idempotency_key, ledger_entries.c.lms_status, ledger_entries.c.error,
).select_from(ledger_entries.join(ledger_batches, ledger_batches.c.id == ledger_entries.c.batch_id))
ledger = LEDGER_ROWS.subquery("ledger")

approvals = sa.Table(
    "approvals",
    _metadata,
    sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("district", sa.Text, nullable=False),
    sa.Column("delivery_id", sa.Text, nullable=False),
    sa.Column("approved_by", sa.Text, nullable=False),
    sa.Column("approved_at", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Index("approvals_by_delivery", "district", "delivery_id"),
    sqlite_autoincrement=True,
)

# Columns added since the first (SQLite-only) release: a ledger created by it gains them on open.
# (`ledger` is the one-row-per-record table of releases before the batch/entry split, migrated on open.)
_ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "sync_state": ("school", "natural_key"),
    "ledger": ("archive_sha256",),
}
_BATCH_COLUMNS = [c.name for c in ledger_batches.columns if c.name != "id"]
_ENTRY_COLUMNS = [c.name for c in ledger_entries.columns if c.name not in ("batch_id", "position")]


@dataclass(frozen=True)
class BatchContext:
    """Where a batch came from: run, district, delivery, archived file (URI, sha256), entity and key."""

    run_id: str
    district: str
    delivery_id: str
    archive_uri: str
    entity: str
    idempotency_key: str
    archive_sha256: str = ""


# One answered batch: where it came from, its changes, and the LMS's (status, error) per change.
AnsweredBatch = tuple[BatchContext, Sequence[PlannedChange], Sequence[tuple[str, str | None]]]


@dataclass(frozen=True)
class Approval:
    """An explicit release of a held change set, naming the delivery it releases."""

    district: str
    delivery_id: str
    approved_by: str
    approved_at: str  # ISO 8601, UTC
    summary: str  # JSON text: what was held (counts per entity/school, ids only, no personal data)
    run_id: str  # "" when approved from the CLI


def ledger_url(target: str | Path | sa.URL) -> sa.URL:
    """A SQLAlchemy URL from a URL or a SQLite file path (how older callers name the ledger).

    A bare `postgresql://` URL gets the psycopg (v3) driver that rostersync installs, instead of
    SQLAlchemy's default psycopg2.
    """
    if isinstance(target, Path) or (isinstance(target, str) and "://" not in target):
        return sa.URL.create("sqlite", database=str(Path(target).resolve()))
    url = sa.make_url(target)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


def masked(url: str | sa.URL) -> str:
    """The URL with its password replaced by `***`: the only form that may reach logs or errors."""
    return sa.make_url(url).render_as_string(hide_password=True)


class SyncLedger:
    """The ledger, approvals and sync state of every district of one installation."""

    def __init__(self, target: str | Path | sa.URL) -> None:
        self.url = ledger_url(target)
        dialect = self.url.get_backend_name()
        if dialect not in SUPPORTED_DIALECTS:
            raise ValueError(f"ledger {masked(self.url)}: dialect {dialect!r} is not supported (use one of {', '.join(SUPPORTED_DIALECTS)})")
        if dialect == "sqlite":
            Path(self.url.database or "").parent.mkdir(parents=True, exist_ok=True)
            # Named parameters, like psycopg's: the hot-path statements below take dict rows on both.
            self._engine = sa.create_engine(self.url, connect_args={"timeout": 30}, paramstyle="named")
            sa.event.listen(self._engine, "connect", _sqlite_wal)
        else:
            self._engine = sa.create_engine(self.url, pool_pre_ping=True)
        with self._engine.begin() as conn:
            _metadata.create_all(conn)
            _add_missing_columns(conn)
            _split_wide_ledger(conn)
            _create_ledger_view(conn)
        dialect = self._engine.dialect
        # How a batch's rows go in: see _RowsInsert (SQLite) and _CopyRows (PostgreSQL).
        self._insert_entries: _RowsWriter
        self._upsert_state: _RowsWriter
        self._deactivate_state: _RowsWriter
        if dialect.name == "sqlite":
            self._insert_entries = _RowsInsert(dialect, _ENTRY_KEYS, lambda rows: ledger_entries.insert().values(rows))
            self._upsert_state = _RowsInsert(dialect, _STATE_KEYS, lambda rows: _state_upsert(dialect, keep=(), rows=rows))
            self._deactivate_state = _RowsInsert(
                dialect, _STATE_KEYS, lambda rows: _state_upsert(dialect, keep=_KEPT_ON_DEACTIVATION, rows=rows)
            )
        else:
            self._insert_entries = _CopyRows(ledger_entries.name, _ENTRY_KEYS)
            self._upsert_state = _CopyRows(_STATE_STAGING, _STATE_KEYS, then=_staged_upsert_sql(dialect, keep=()))
            self._deactivate_state = _CopyRows(_STATE_STAGING, _STATE_KEYS, then=_staged_upsert_sql(dialect, keep=_KEPT_ON_DEACTIVATION))

    def __repr__(self) -> str:
        return f"SyncLedger({masked(self.url)!r})"

    __str__ = __repr__

    def close(self) -> None:
        """Release pooled connections (a server database keeps them open otherwise)."""
        self._engine.dispose()

    def __enter__(self) -> SyncLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load_state(self, district: str, entity: str) -> pd.DataFrame:
        """What the LMS last acknowledged for one entity of a district.

        Columns: sourcedId, content_hash, active, school (categorical: a few hundred schools name
        millions of records, 1 byte a row instead of a string). The natural-key digest is not loaded
        (64 hex characters a row, 0.55 GB at 8 M rows): the diff needs it only for the records it
        deactivates, and asks `natural_keys` for those. States reach millions of rows
        (8 M enrollments), so they are never fetched whole as Python tuples (1 GB per million rows):
        PostgreSQL's stream through ADBC (binary COPY) into Arrow batches; SQLite's come in chunks that
        pandas turns into Arrow-backed columns. Either way only one batch is in flight at a time.
        (SQLite stays on the process's own SQLite library: a second copy, as an ADBC driver would
        bring, breaks SQLite's file locks within one process.)
        """
        # Values inlined (escaped by SQLAlchemy): the ADBC driver streams by COPY only without parameters.
        query = (
            sa.select(sync_state.c.sourced_id, sync_state.c.content_hash, sync_state.c.active, sync_state.c.school)
            .where(sync_state.c.district == district, sync_state.c.entity == entity)
        )
        sql = str(query.compile(dialect=self._engine.dialect, compile_kwargs={"literal_binds": True}))
        if self.url.get_backend_name() == "sqlite":
            chunks = self._read_sqlite(sql)
        else:
            chunks = _read_postgresql(self.url, sql)
        frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame({c: pd.Series(dtype=str) for c in STATE_COLUMNS})
        frame.columns = STATE_COLUMNS
        return frame.astype({"sourcedId": str, "content_hash": str, "active": bool, "school": str}).astype({"school": "category"})

    def natural_keys(self, district: str, entity: str, sourced_ids: Sequence[str]) -> dict[str, str]:
        """The stored natural-key digest of each of `sourced_ids` the state holds (by primary key).

        The diff's lookup for the records it deactivates (a few thousand on a normal night).
        """
        found: dict[str, str] = {}
        query = sa.select(sync_state.c.sourced_id, sync_state.c.natural_key).where(
            sync_state.c.district == district,
            sync_state.c.entity == entity,
            sync_state.c.sourced_id.in_(sa.bindparam("ids", expanding=True)),
        )
        ids = list(dict.fromkeys(sourced_ids))
        with self._engine.connect() as conn:
            for start in range(0, len(ids), _LOOKUP_IDS):
                found.update(conn.execute(query, {"ids": ids[start : start + _LOOKUP_IDS]}).tuples().all())
        return found

    def _read_sqlite(self, sql: str) -> list[pd.DataFrame]:
        with self._engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute(sql)
            return [
                pd.DataFrame.from_records(rows, columns=STATE_COLUMNS)
                for rows in iter(lambda: cursor.fetchmany(_SQLITE_CHUNK_ROWS), [])
            ]

    def record_batch(
        self, context: BatchContext, changes: Sequence[PlannedChange], statuses: Sequence[tuple[str, str | None]]
    ) -> int:
        """One answered batch: `record_batches` with a single item."""
        return self.record_batches([(context, changes, statuses)])

    def record_batches(self, batches: Sequence[AnsweredBatch]) -> int:
        """Append one ledger row per change and advance the state of acknowledged ones, for every
        batch given, in ONE transaction; returns the acknowledged records.

        Several batches per transaction cost one commit instead of several: with random sourcedIds a
        commit writes out about a page per record per index, and batches answered together share
        them. Record contents never enter the ledger: it keeps ids, hashes and the LMS's answer. A
        deactivation keeps the record's last hash, school and natural key in the state, so id-churn
        and per-school checks can still judge it later.

        Each item is (context, changes, statuses), `statuses` holding the LMS's (status, error) per
        change, in the same order.
        """
        now = _now()
        rows = [_batch_rows(context, changes, statuses, now) for context, changes, statuses in batches]
        if not rows:
            return 0
        with self._engine.begin() as conn:
            # One statement for all batch rows (ids back in the order given), one for all their entries.
            insert = ledger_batches.insert().returning(ledger_batches.c.id, sort_by_parameter_order=True)
            batch_ids = conn.execute(insert, [batch for batch, _, _, _ in rows]).scalars().all()
            self._insert_entries.execute(
                conn, [(batch_id, *entry) for batch_id, (_, entries, _, _) in zip(batch_ids, rows) for entry in entries]
            )
            for upserts, deactivations in _merged_state_rows([(u, d) for _, _, u, d in rows]):
                self._upsert_state.execute(conn, upserts)
                self._deactivate_state.execute(conn, deactivations)
        return sum(len(upserts) + len(deactivations) for _, _, upserts, deactivations in rows)

    def history(self, district: str, sourced_id: str) -> list[dict[str, object]]:
        """Every ledger row of one record of a district, newest first."""
        query = (
            sa.select(ledger)
            .where(ledger.c.district == district, ledger.c.sourced_id == sourced_id)
            .order_by(ledger.c.batch_id.desc(), ledger.c.position.desc())
        )
        with self._engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def run_counts(self, district: str, run_id: str) -> dict[str, int]:
        """LMS statuses of one run's writes, counted (for summaries)."""
        query = (
            sa.select(ledger.c.lms_status, sa.func.count())
            .where(ledger.c.district == district, ledger.c.run_id == run_id)
            .group_by(ledger.c.lms_status)
        )
        with self._engine.connect() as conn:
            return {status: count for status, count in conn.execute(query)}

    def runs(self, district: str) -> list[dict[str, object]]:
        """The district's syncs, newest first: run id, delivery, first and last write, counts per status."""
        query = (
            sa.select(
                ledger.c.run_id, ledger.c.delivery_id, ledger.c.lms_status, sa.func.count().label("records"),
                sa.func.min(ledger.c.at).label("started_at"), sa.func.max(ledger.c.at).label("finished_at"),
                sa.func.min(ledger.c.batch_id).label("first_id"),
            )
            .where(ledger.c.district == district)
            .group_by(ledger.c.run_id, ledger.c.delivery_id, ledger.c.lms_status)
        )
        runs: dict[tuple[str, str], dict] = {}
        with self._engine.connect() as conn:
            for row in conn.execute(query):
                run = runs.setdefault((row.run_id, row.delivery_id), {
                    "run_id": row.run_id, "delivery_id": row.delivery_id, "started_at": row.started_at,
                    "finished_at": row.finished_at, "counts": {}, "_first": row.first_id,
                })
                run["counts"][row.lms_status] = row.records
                run["started_at"] = min(run["started_at"], row.started_at)
                run["finished_at"] = max(run["finished_at"], row.finished_at)
                run["_first"] = min(run["_first"], row.first_id)
        ordered = sorted(runs.values(), key=lambda run: run.pop("_first"), reverse=True)
        for run in ordered:
            run["counts"] = dict(sorted(run["counts"].items()))
        return ordered

    def record_approval(self, district: str, delivery_id: str, approved_by: str, summary: str, run_id: str = "") -> Approval:
        """Append an approval of one delivery of a district (approvals are never changed or removed)."""
        if not approved_by.strip():
            raise ValueError(f"district {district}: an approval of delivery {delivery_id} must name who approved it")
        approval = Approval(
            district=district, delivery_id=delivery_id, approved_by=approved_by,
            approved_at=_now(), summary=summary, run_id=run_id,
        )
        with self._engine.begin() as conn:
            conn.execute(approvals.insert(), [approval.__dict__])
        return approval

    def approval_for(self, district: str, delivery_id: str) -> Approval | None:
        """The latest approval of one delivery, or None when it was never approved."""
        found = self._approvals(sa.and_(approvals.c.district == district, approvals.c.delivery_id == delivery_id), limit=1)
        return found[0] if found else None

    def approvals(self, district: str) -> list[Approval]:
        """Every approval of a district, newest first."""
        return self._approvals(approvals.c.district == district)

    def _approvals(self, where: sa.ColumnElement[bool], limit: int | None = None) -> list[Approval]:
        fields = [approvals.c[name] for name in Approval.__dataclass_fields__]
        query = sa.select(*fields).where(where).order_by(approvals.c.id.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [Approval(**row) for row in conn.execute(query).mappings()]


def _batch_rows(
    context: BatchContext, changes: Sequence[PlannedChange], statuses: Sequence[tuple[str, str | None]], now: str
) -> tuple[dict[str, object], list[tuple], list[tuple], list[tuple]]:
    """One answered batch as rows: its `ledger_batches` row, its entries (without batch id), and the
    state rows its acknowledged upserts and deactivations write."""
    if len(changes) != len(statuses):
        raise ValueError(f"{len(changes)} changes but {len(statuses)} LMS results")
    entity_file = f"{context.entity}.csv"
    entries: list[tuple] = []
    upserts: list[tuple] = []
    deactivations: list[tuple] = []
    for position, (change, (status, error)) in enumerate(zip(changes, statuses)):
        entries.append((
            position, change.source_file or entity_file, change.line, change.sourced_id, change.op,
            change.hash_before, change.hash_after, status, error,
        ))
        if status not in ACKNOWLEDGED:
            continue
        deactivating = change.lms_op == "deactivate"
        (deactivations if deactivating else upserts).append((
            context.district, context.entity, change.sourced_id,
            change.hash_before if deactivating else change.hash_after,
            0 if deactivating else 1, context.delivery_id, now, change.school, change.natural_key,
        ))
    batch = {
        "at": now, "run_id": context.run_id, "district": context.district, "delivery_id": context.delivery_id,
        "archive_uri": context.archive_uri, "archive_sha256": context.archive_sha256, "entity": context.entity,
        "idempotency_key": context.idempotency_key,
    }
    return batch, entries, upserts, deactivations


def _merged_state_rows(batches: Sequence[tuple[list[tuple], list[tuple]]]) -> list[tuple[list[tuple], list[tuple]]]:
    """The batches' (upserts, deactivations) state rows in as few statements as give the same result.

    Consecutive batches merge while no record is upserted by one and deactivated by another (then
    the order of the two statements does not matter); a record written twice keeps its last row (one
    statement may not upsert a row twice: PostgreSQL refuses).
    """
    merged: list[tuple[dict, dict]] = [({}, {})]
    for upserts, deactivations in batches:
        current_upserts, current_deactivations = merged[-1]
        upsert_keys = {row[:3] for row in upserts}  # (district, entity, sourcedId)
        deactivation_keys = {row[:3] for row in deactivations}
        if upsert_keys & current_deactivations.keys() or deactivation_keys & current_upserts.keys():
            merged.append(({}, {}))
            current_upserts, current_deactivations = merged[-1]
        current_upserts.update((row[:3], row) for row in upserts)
        current_deactivations.update((row[:3], row) for row in deactivations)
    return [(list(upserts.values()), list(deactivations.values())) for upserts, deactivations in merged]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _sqlite_wal(dbapi_connection: object, _record: object) -> None:
    """WAL lets the webserver and CLI read while a run writes.

    synchronous=NORMAL: a commit no longer waits for an fsync (one per LMS batch). WAL keeps the file
    consistent on any crash; a power cut may lose the last batches' ledger rows and state advance, and
    the next run re-sends exactly those batches under the same content-derived idempotency keys, so the
    LMS replays its stored answers and the ledger catches up: nothing is applied twice.
    """
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _add_missing_columns(conn: sa.Connection) -> None:
    """Bring a ledger written by an older rostersync up to the current tables (columns are only added)."""
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    for table_name, names in _ADDED_COLUMNS.items():
        if table_name not in tables:  # `ledger` is a view since the split
            continue
        present = {column["name"] for column in inspector.get_columns(table_name)}
        for name in names:
            if name not in present:
                conn.execute(sa.text(f"ALTER TABLE {table_name} ADD COLUMN {name} TEXT NOT NULL DEFAULT ''"))


def _split_wide_ledger(conn: sa.Connection) -> None:
    """Move a ledger of one wide row per record (releases before the split) into batches and entries.

    A batch is the rows sharing time, run, delivery, archive, entity and idempotency key; entries keep
    their order within it. Runs inside the opening transaction: the old table is gone only if all its
    rows moved.
    """
    if "ledger" not in sa.inspect(conn).get_table_names():
        return
    batch_columns = ", ".join(_BATCH_COLUMNS)
    conn.execute(sa.text(
        f"INSERT INTO ledger_batches ({batch_columns}) SELECT {batch_columns} FROM ledger"
        f" GROUP BY {batch_columns} ORDER BY MIN(id)"
    ))
    same_batch = " AND ".join(f"b.{name} = l.{name}" for name in _BATCH_COLUMNS)
    entry_columns = ", ".join(_ENTRY_COLUMNS)
    conn.execute(sa.text(
        f"INSERT INTO ledger_entries (batch_id, position, {entry_columns})"
        f" SELECT b.id, ROW_NUMBER() OVER (PARTITION BY b.id ORDER BY l.id) - 1, "
        + ", ".join(f"l.{name}" for name in _ENTRY_COLUMNS)
        + f" FROM ledger l JOIN ledger_batches b ON {same_batch}"
    ))
    conn.execute(sa.text("DROP TABLE ledger"))


def _create_ledger_view(conn: sa.Connection) -> None:
    """The view `ledger`: LEDGER_ROWS in the database, for SQL readers (dashboards, ad-hoc questions)."""
    select = str(LEDGER_ROWS.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    create = "CREATE OR REPLACE VIEW" if conn.dialect.name == "postgresql" else "CREATE VIEW IF NOT EXISTS"
    conn.execute(sa.text(f"{create} ledger AS {select}"))


def _state_upsert(
    dialect: sa.Dialect, keep: tuple[str, ...], *, rows: list[dict] | None = None, select: sa.Select | None = None
) -> sa.Insert:
    """Insert or overwrite state rows (`rows`, or what `select` reads); columns in `keep` keep their stored value on overwrite."""
    insert = (postgresql.insert if dialect.name == "postgresql" else sqlite.insert)(sync_state)
    insert = insert.values(rows) if select is None else insert.from_select([c.name for c in sync_state.columns], select)
    updated = [c.name for c in sync_state.columns if not c.primary_key and c.name not in keep]
    return insert.on_conflict_do_update(
        index_elements=[c.name for c in sync_state.primary_key],
        set_={name: insert.excluded[name] for name in updated},
    )


_ENTRY_KEYS = [c.name for c in ledger_entries.columns]
_STATE_KEYS = [c.name for c in sync_state.columns]


# A deactivation keeps the record's last school and natural key in the state.
_KEPT_ON_DEACTIVATION = ("school", "natural_key")
# Rows per statement: 500 entries of 10 columns are 5,000 parameters, well within SQLite's 32,766.
_ROWS_PER_STATEMENT = 500
# PostgreSQL: state rows are copied here, then upserted into sync_state in one INSERT ... SELECT. A
# temporary table lives as long as its connection and is seen by it alone; emptied after each use.
_STATE_STAGING = "sync_state_incoming"
_staging = sa.Table(_STATE_STAGING, sa.MetaData(), *(sa.Column(c.name, c.type) for c in sync_state.columns))


class _RowsWriter(Protocol):
    def execute(self, conn: sa.Connection, rows: Sequence[tuple]) -> None: ...


def _staged_upsert_sql(dialect: sa.Dialect, keep: tuple[str, ...]) -> str:
    select = sa.select(*(_staging.c[c.name] for c in sync_state.columns))
    return str(_state_upsert(dialect, keep, select=select).compile(dialect=dialect))


class _CopyRows:
    """PostgreSQL: rows go in by COPY, then (for the state) one upsert from the staging table.

    Measured per row on the client: COPY 1.2 µs, executemany 13 µs, a 500-row VALUES statement 22–26 µs
    (psycopg parses a statement that long again on every call).
    """

    def __init__(self, table: str, keys: list[str], then: str | None = None) -> None:
        self._copy = f"COPY {table} ({', '.join(keys)}) FROM STDIN"
        self._then = then
        self._empty = f"DELETE FROM {table}"

    def execute(self, conn: sa.Connection, rows: Sequence[tuple]) -> None:
        if not rows:
            return
        if self._then is not None:  # every time: a rolled-back transaction takes a table it created with it
            conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STATE_STAGING} (LIKE sync_state INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS"
            )
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(self._copy) as copy:
                for row in rows:
                    copy.write_row(row)
            if self._then is not None:
                cursor.execute(self._then)
                cursor.execute(self._empty)
        except psycopg.Error as error:  # the raw cursor's errors as SQLAlchemy raises them elsewhere
            raise sa.exc.DBAPIError.instance(self._copy, None, error, psycopg.Error) from error


class _RowsInsert:
    """SQLite: an INSERT of many rows as ONE statement with a positional parameter per value, compiled once per row count.

    One statement per batch, not the driver's executemany (a statement per row): Python's sqlite3
    releases the GIL around every statement it steps and must win it back afterwards, and with the
    LMS client's threads parsing answers meanwhile, each of 1,000 reacquisitions a batch could wait
    a whole thread switch interval. Positional, not named, parameters: SQLite looks named ones up
    one by one (quadratic: 31 ms against 0.2 ms for a 500-row statement). Rows go to the driver as
    they are, without SQLAlchemy's per-parameter processing.
    """

    def __init__(self, dialect: sa.Dialect, keys: list[str], statement: Callable[[list[dict]], sa.Insert]) -> None:
        self._dialect = type(dialect)(paramstyle="qmark")  # the same dialect with positional placeholders
        self._keys = keys
        self._statement = statement
        self._compiled: dict[int, str] = {}  # row count -> SQL

    def execute(self, conn: sa.Connection, rows: Sequence[tuple]) -> None:
        """Insert `rows` (tuples in the order of `keys`)."""
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            conn.exec_driver_sql(self._sql(len(chunk)), tuple(itertools.chain.from_iterable(chunk)))

    def _sql(self, count: int) -> str:
        if count not in self._compiled:  # at most _ROWS_PER_STATEMENT row counts
            names = [f"{key}_{row}" for row in range(count) for key in self._keys]
            values = [{key: sa.bindparam(f"{key}_{row}") for key in self._keys} for row in range(count)]
            compiled = self._statement(values).compile(dialect=self._dialect)
            if list(compiled.positiontup or ()) != names:  # the rows' values are passed in this order
                raise RuntimeError(f"{count}-row insert: placeholders are not in row order")
            self._compiled[count] = str(compiled)
        return self._compiled[count]


def _read_postgresql(url: sa.URL, sql: str) -> list[pd.DataFrame]:
    """A query's rows as Arrow-backed frames, one per batch the ADBC driver streams (libpq URI: no +driver)."""
    uri = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with adbc_postgresql.connect(uri) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return [pa.Table.from_batches([batch]).to_pandas() for batch in cursor.fetch_record_batch()]
