"""The ledger: an append-only record of every LMS write and approval, and the sync state it advances.

All three tables live in one database so a batch's ledger rows and the advance of the sync state
commit in ONE transaction: the state moves only for records the LMS acknowledged, and a run killed
between batches resumes from exactly what was acknowledged. The ledger answers "why is this student
in this class?" from delivery, archived file and row to batch and the LMS's answer.

The database is a SQLite file (WAL) by default and any SQLAlchemy URL in production; the code runs
on SQLite and PostgreSQL, the two dialects the tests exercise (the state's upsert is dialect SQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
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

ledger = sa.Table(
    "ledger",
    _metadata,
    sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("district", sa.Text, nullable=False),
    sa.Column("delivery_id", sa.Text, nullable=False),
    sa.Column("archive_uri", sa.Text, nullable=False),
    sa.Column("source_file", sa.Text, nullable=False),
    sa.Column("source_line", sa.Integer, nullable=False),
    sa.Column("entity", sa.Text, nullable=False),
    sa.Column("sourced_id", sa.Text, nullable=False),
    sa.Column("operation", sa.Text, nullable=False),
    sa.Column("hash_before", sa.Text, nullable=False),
    sa.Column("hash_after", sa.Text, nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=False),
    sa.Column("lms_status", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("archive_sha256", sa.Text, nullable=False, server_default=""),
    sa.Index("ledger_by_record", "district", "sourced_id"),
    sa.Index("ledger_by_run", "district", "run_id"),
    sqlite_autoincrement=True,
)

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
_ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "sync_state": ("school", "natural_key"),
    "ledger": ("archive_sha256",),
}


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
        # Every batch writes 500 ledger rows and state rows: compiled once, sent straight to the driver's
        # executemany (SQLAlchemy's per-row parameter processing cost more than the writes themselves).
        self._insert_ledger_sql = _compiled(self._engine.dialect, ledger.insert(), _LEDGER_KEYS)
        self._upsert_sql = _compiled(self._engine.dialect, _state_upsert(self._engine.dialect, keep=()), _STATE_KEYS)
        self._deactivate_sql = _compiled(
            self._engine.dialect, _state_upsert(self._engine.dialect, keep=("school", "natural_key")), _STATE_KEYS
        )

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
        """Append one ledger row per change and advance the state of acknowledged ones; returns acks.

        Record contents never enter the ledger: it keeps ids, hashes and the LMS's answer. A
        deactivation keeps the record's last hash, school and natural key in the state, so id-churn
        and per-school checks can still judge it later.

        `statuses` holds the LMS's (status, error) per change, in the same order.
        """
        if len(changes) != len(statuses):
            raise ValueError(f"{len(changes)} changes but {len(statuses)} LMS results")
        now = _now()
        ledger_rows, upserts, deactivations = [], [], []
        for change, (status, error) in zip(changes, statuses):
            ledger_rows.append({
                "at": now, "run_id": context.run_id, "district": context.district,
                "delivery_id": context.delivery_id, "archive_uri": context.archive_uri,
                "archive_sha256": context.archive_sha256, "source_file": f"{context.entity}.csv",
                "source_line": change.line, "entity": context.entity, "sourced_id": change.sourced_id,
                "operation": change.op, "hash_before": change.hash_before, "hash_after": change.hash_after,
                "idempotency_key": context.idempotency_key, "lms_status": status, "error": error,
            })
            if status not in ACKNOWLEDGED:
                continue
            deactivating = change.lms_op == "deactivate"
            (deactivations if deactivating else upserts).append({
                "district": context.district, "entity": context.entity, "sourced_id": change.sourced_id,
                "content_hash": change.hash_before if deactivating else change.hash_after,
                "active": 0 if deactivating else 1, "delivery_id": context.delivery_id, "updated_at": now,
                "school": change.school, "natural_key": change.natural_key,
            })
        with self._engine.begin() as conn:
            for sql, rows in ((self._insert_ledger_sql, ledger_rows), (self._upsert_sql, upserts), (self._deactivate_sql, deactivations)):
                if rows:
                    conn.exec_driver_sql(sql, rows)
        return len(upserts) + len(deactivations)

    def history(self, district: str, sourced_id: str) -> list[dict[str, object]]:
        """Every ledger row of one record of a district, newest first."""
        query = (
            sa.select(ledger)
            .where(ledger.c.district == district, ledger.c.sourced_id == sourced_id)
            .order_by(ledger.c.id.desc())
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
                sa.func.min(ledger.c.id).label("first_id"),
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
    for table_name, names in _ADDED_COLUMNS.items():
        present = {column["name"] for column in inspector.get_columns(table_name)}
        for name in names:
            if name not in present:
                conn.execute(sa.text(f"ALTER TABLE {table_name} ADD COLUMN {name} TEXT NOT NULL DEFAULT ''"))


def _state_upsert(dialect: sa.Dialect, keep: tuple[str, ...]) -> sa.Insert:
    """Insert or overwrite state rows; columns in `keep` keep their stored value on overwrite."""
    insert = (postgresql.insert if dialect.name == "postgresql" else sqlite.insert)(sync_state)
    updated = [c.name for c in sync_state.columns if not c.primary_key and c.name not in keep]
    return insert.on_conflict_do_update(
        index_elements=[c.name for c in sync_state.primary_key],
        set_={name: insert.excluded[name] for name in updated},
    )


_LEDGER_KEYS = [c.name for c in ledger.columns if c.name != "id"]
_STATE_KEYS = [c.name for c in sync_state.columns]


def _compiled(dialect: sa.Dialect, statement: sa.Insert, keys: list[str]) -> str:
    """The statement as the driver's SQL, with one named parameter per key (dict rows bind by name)."""
    return str(statement.compile(dialect=dialect, column_keys=keys))


def _read_postgresql(url: sa.URL, sql: str) -> list[pd.DataFrame]:
    """A query's rows as Arrow-backed frames, one per batch the ADBC driver streams (libpq URI: no +driver)."""
    uri = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with adbc_postgresql.connect(uri) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return [pa.Table.from_batches([batch]).to_pandas() for batch in cursor.fetch_record_batch()]
