"""The sandbox LMS: the LMS REST contract (docs/lms-api.md) served by Starlette over SQLite.

The demo and the tests sync into this instead of a real LMS, so it implements the contract
exactly (idempotent batches, per-record results, cursor pagination, 401/404/422/429) and can be
told to be slow, to fail, throttle, drop connections or reject records (`SandboxFaults`) to
exercise the client's retries and the sync's resumption. Its idempotency log is what lets tests
prove that no batch was ever applied twice.
Record values are student personal data: they are never logged and never echoed in errors.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rostersync_assets.connectors.lms_client import MAX_BATCH_OPERATIONS, MAX_PAGE_SIZE
from rostersync_assets.oneroster.spec import ENTITIES, NEVER_SENT_COLUMNS, SPECS

logger = logging.getLogger("rostersync.sandbox.lms")

DEFAULT_PAGE_SIZE = 100
_IDS_PER_QUERY = 500  # bound parameters per IN (...) query, well below SQLite's limit
# The fields an upsert's record may hold, per entity (checked on every record of every batch).
_SENDABLE = {entity: frozenset(SPECS[entity].columns) - NEVER_SENT_COLUMNS for entity in ENTITIES}
_OTHER_ID = "record sourcedId differs from the operation's sourcedId"
_ONLY_STR = frozenset({str})
MAX_IDEMPOTENCY_KEY_LENGTH = 255

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    tenant TEXT NOT NULL,
    entity TEXT NOT NULL,
    sourced_id TEXT NOT NULL,
    active INTEGER NOT NULL,
    record_json TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, entity, sourced_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT NOT NULL,
    tenant TEXT NOT NULL,
    entity TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    response_json TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    times_seen INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
);
"""


class IdempotencyKeyReused(Exception):
    """The key was already used by this tenant for a different entity or body (answered 422)."""


class InvalidCursor(ValueError):
    """A cursor this server did not hand out."""


@dataclass(frozen=True)
class BatchOutcome:
    """The response body of a batch (parsed, and the JSON text that is sent), and whether it is a replay.

    A replay answers with the stored text itself: byte for byte what the first application answered.
    """

    response: dict[str, Any]
    replayed: bool
    response_json: str


@dataclass(frozen=True)
class IdempotencyRow:
    """One applied batch: each row is exactly one application; `times_seen` counts the requests."""

    key: str
    tenant: str
    entity: str
    body_sha256: str
    response: dict[str, Any]
    first_seen: str
    times_seen: int


class SandboxLmsStore:
    """The sandbox LMS's state in one SQLite file, safe to use from several threads and processes.

    Each thread keeps its own connection (sqlite3 connections must not cross threads; opening one
    per call made every last close checkpoint the WAL, which cost more than applying a batch), and
    WAL mode lets tests read while the server writes. `synchronous=NORMAL` survives the crash of
    any process (only a power loss could lose the newest commits): enough for a sandbox. A batch
    and its idempotency row commit together in one `BEGIN IMMEDIATE` transaction, so concurrent
    retries of one key serialize: the second sees the first's row and replays it.
    """

    def __init__(self, db_path: Path) -> None:
        self._db_path = Path(db_path)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._db_path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        yield conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # Threads of this process take turns on a lock first: waiting for SQLite's write lock itself
        # means its busy handler's sleeps (1, 2, 5, 10 ms...), which left the LMS idle between the
        # batches of concurrent requests. Other processes still meet the busy timeout.
        with self._write_lock, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def apply_batch(
        self,
        tenant: str,
        entity: str,
        operations: Sequence[Mapping[str, Any]],
        idempotency_key: str,
        rejected: frozenset[str] = frozenset(),
    ) -> BatchOutcome:
        """Apply the operations once per key; a repeat of the key replays the stored response.

        Operations on a `rejected` sourcedId are answered with a per-record error and not applied
        (an injected fault); the stored response keeps that answer like any other.
        Raises IdempotencyKeyReused when the key already belongs to another entity or body.
        """
        records = [_canonical_record(operation) for operation in operations]
        body_sha256 = _body_sha256(operations, records)
        # Judged before the write lock is taken: which rule each operation breaks depends on it alone.
        problems = [_operation_problem(entity, operation) for operation in operations]
        with self._transaction() as conn:
            seen = conn.execute(
                "SELECT entity, body_sha256, response_json FROM idempotency"
                " WHERE tenant=? AND key=?",
                (tenant, idempotency_key),
            ).fetchone()
            if seen is not None:
                if (seen[0], seen[1]) != (entity, body_sha256):
                    raise IdempotencyKeyReused(idempotency_key)
                conn.execute(
                    "UPDATE idempotency SET times_seen = times_seen + 1 WHERE tenant=? AND key=?",
                    (tenant, idempotency_key),
                )
                return BatchOutcome(json.loads(seen[2]), replayed=True, response_json=seen[2])
            now = _now()
            results = _apply_operations(conn, tenant, entity, operations, records, problems, now, rejected)
            response = {"results": results}
            response_json = json.dumps(response)
            conn.execute(
                "INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?, 1)",
                (idempotency_key, tenant, entity, body_sha256, response_json, now),
            )
        return BatchOutcome(response, replayed=False, response_json=response_json)

    def list_records(
        self, tenant: str, entity: str, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of records (active or not) ordered by sourcedId, and the cursor of the next."""
        after = _decode_cursor(cursor) if cursor is not None else ""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT sourced_id, active, record_json FROM records"
                " WHERE tenant=? AND entity=? AND sourced_id > ? ORDER BY sourced_id LIMIT ?",
                (tenant, entity, after, limit + 1),
            ).fetchall()
        page = rows[:limit]
        items = [
            {**json.loads(record), "sourcedId": sid, "active": bool(active)}
            for sid, active, record in page
        ]
        next_cursor = _encode_cursor(page[-1][0]) if len(rows) > limit else None
        return items, next_cursor

    def active_records(self, tenant: str, entity: str) -> dict[str, dict[str, str]]:
        """sourcedId -> record of every active record: what the LMS currently shows."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT sourced_id, record_json FROM records"
                " WHERE tenant=? AND entity=? AND active=1 ORDER BY sourced_id",
                (tenant, entity),
            ).fetchall()
        return {sid: json.loads(record) for sid, record in rows}

    def idempotency_log(self) -> list[IdempotencyRow]:
        """Every applied batch in the order first seen."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT key, tenant, entity, body_sha256, response_json, first_seen, times_seen"
                " FROM idempotency ORDER BY first_seen, rowid"
            ).fetchall()
        return [
            IdempotencyRow(key, tenant, entity, sha, json.loads(response), first_seen, times_seen)
            for key, tenant, entity, sha, response, first_seen, times_seen in rows
        ]


def _apply_operations(
    conn: sqlite3.Connection,
    tenant: str,
    entity: str,
    operations: Sequence[Mapping[str, Any]],
    records: Sequence[str | None],
    problems: Sequence[str | None],
    now: str,
    rejected: frozenset[str],
) -> list[dict[str, str]]:
    """Apply the operations in order inside the batch's transaction; returns their result objects.

    The records a batch names are read in one query and written in one upsert statement (a row per
    operation cost more than the HTTP around it); `state` follows the batch as it goes, so an
    operation sees what the earlier ones of the same batch did. Operations on a `rejected`
    sourcedId (an injected fault) get an error and change nothing, like those with a `problems` entry
    (the contract rule they break). `records` holds each operation's record as canonical JSON text
    (`_canonical_record`): it is what gets stored, and a record is unchanged when its stored text is
    the same, without parsing what is stored.
    """
    state = _current_records(conn, tenant, entity, operations)
    written: dict[str, tuple[int, str]] = {}
    results = []
    for operation, record_json, problem in zip(operations, records, problems):
        sourced_id = operation.get("sourcedId")
        shown_id = sourced_id if isinstance(sourced_id, str) else ""
        if problem is None and sourced_id in rejected:
            problem = REJECTION_MESSAGE
        if problem is not None:
            results.append({"sourcedId": shown_id, "status": "error", "error": problem})
            continue
        current = state.get(sourced_id)
        if operation["op"] == "deactivate":
            status = "deactivated" if current is not None and current[0] else "unchanged"
            after = (0, current[1]) if status == "deactivated" else None
        else:
            # Rows stored before records were kept canonical hold another key order: compared parsed.
            same = current is not None and current[0] and (
                current[1] == record_json or json.loads(current[1]) == operation["record"]
            )
            status = "unchanged" if same else ("created" if current is None else "updated")
            after = None if same else (1, record_json)
        if after is not None:
            state[sourced_id] = written[sourced_id] = after
        results.append({"sourcedId": shown_id, "status": status})
    rows = [(tenant, entity, sid, active, record_json, now) for sid, (active, record_json) in written.items()]
    for start in range(0, len(rows), _IDS_PER_QUERY):
        chunk = rows[start : start + _IDS_PER_QUERY]
        conn.execute(_upsert_records_sql(len(chunk)), [value for row in chunk for value in row])
    return results


@functools.lru_cache(maxsize=_IDS_PER_QUERY)
def _upsert_records_sql(rows: int) -> str:
    """Upsert of `rows` records as one statement: executemany steps (and releases the GIL) once per
    row, and each time the event loop's thread may hold on to the GIL for a whole switch interval."""
    return (
        "INSERT INTO records VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
        + " ON CONFLICT (tenant, entity, sourced_id)"
        " DO UPDATE SET active=excluded.active, record_json=excluded.record_json, updated_at=excluded.updated_at"
    )


def _current_records(
    conn: sqlite3.Connection, tenant: str, entity: str, operations: Sequence[Mapping[str, Any]]
) -> dict[str, tuple[int, str]]:
    """sourcedId -> (active, record JSON) of the stored records the operations name."""
    ids = sorted({op["sourcedId"] for op in operations if isinstance(op.get("sourcedId"), str)})
    found: dict[str, tuple[int, str]] = {}
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[start : start + _IDS_PER_QUERY]
        rows = conn.execute(
            "SELECT sourced_id, active, record_json FROM records WHERE tenant=? AND entity=?"
            f" AND sourced_id IN ({','.join('?' * len(chunk))})",
            (tenant, entity, *chunk),
        )
        found.update((sid, (active, record_json)) for sid, active, record_json in rows)
    return found


def _operation_problem(entity: str, operation: Mapping[str, Any]) -> str | None:
    """The contract rule an operation breaks, worded without any of its values, or None."""
    op = operation.get("op")
    sourced_id = operation.get("sourcedId")
    if op not in ("upsert", "deactivate"):
        return "op must be 'upsert' or 'deactivate'"
    if not isinstance(sourced_id, str) or not sourced_id:
        return "sourcedId must be a non-empty string"
    if op == "deactivate":
        return None
    record = operation.get("record")
    if not isinstance(record, dict):
        return "upsert requires a record object"
    return _record_problem(entity, sourced_id, record)


def _record_problem(entity: str, sourced_id: str, record: Mapping[str, Any]) -> str | None:
    # The fast path, for every record of every batch: value types checked in C (map and set), not a generator.
    if record.keys() <= _SENDABLE[entity] and set(map(type, record.values())) <= _ONLY_STR:
        return None if record.get("sourcedId", sourced_id) == sourced_id else _OTHER_ID
    columns = SPECS[entity].columns  # the slow path names the first broken rule
    for column, value in record.items():
        if column in NEVER_SENT_COLUMNS:
            return f"record field {column!r} must never be sent to the LMS"
        if column not in columns:
            return f"record field {column[:64]!r} is not a column of {entity}"
        if not isinstance(value, str):
            return f"record field {column!r} must be a string"
    if record.get("sourcedId", sourced_id) != sourced_id:
        return _OTHER_ID
    return None


# Canonical JSON: sorted keys, no whitespace, UTF-8 as is. One encoder, not one per json.dumps call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical_record(operation: Mapping[str, Any]) -> str | None:
    """An operation's record as canonical JSON text, None when it has no record object.

    Encoded once per record and used three times: in the body's hash, as the stored record and to
    tell an unchanged record from an update.
    """
    record = operation.get("record")
    return _CANONICAL.encode(record) if isinstance(record, dict) else None


def _body_sha256(operations: Sequence[Mapping[str, Any]], records: Sequence[str | None]) -> str:
    """Hash of the parsed body, so whitespace or key order does not make a retry 'different'.

    The canonical JSON text of `{"operations": [...]}`, assembled from the records' canonical texts
    (an operation holding exactly op, record and sourcedId, keys in sorted order) instead of encoding
    every record a second time; any other operation is encoded whole. Equal to encoding the body.
    """
    encode = _CANONICAL.encode
    parts = [
        f'{{"op":{encode(operation["op"])},"record":{record},"sourcedId":{encode(operation["sourcedId"])}}}'
        if record is not None and len(operation) == 3 and "op" in operation and "sourcedId" in operation
        else encode(operation)
        for operation, record in zip(operations, records)
    ]
    canonical = f'{{"operations":[{",".join(parts)}]}}'
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _encode_cursor(sourced_id: str) -> str:
    return base64.urlsafe_b64encode(sourced_id.encode("utf-8")).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        padded = (cursor + "=" * (-len(cursor) % 4)).encode("ascii")
        after = base64.b64decode(padded, altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError) as exc:
        raise InvalidCursor("invalid cursor") from exc
    if not after:
        raise InvalidCursor("invalid cursor")
    return after


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class SandboxFaults:
    """Misbehaviour to switch on for tests and benchmarks, read live (a test may change it mid-run).

    Shares are per batch request and decided by a random draw seeded with (`seed`, Idempotency-Key,
    how often this key was seen), so a run is reproducible whatever order concurrent requests arrive
    in, and a retry of the same key gets a fresh draw. Rejections are per record, seeded by sourcedId:
    a rejected record stays rejected until the fault is lifted.
    """

    latency_s: float = 0.0
    fail_first_batches: int = 0  # answered 503 before anything is applied
    throttle_first_batches: int = 0  # answered 429 with Retry-After before anything is applied
    retry_after_s: int = 1
    error_share: float = 0.0  # answered 503, nothing applied
    throttle_share: float = 0.0  # answered 429 with Retry-After, nothing applied
    drop_before_share: float = 0.0  # connection closed without an answer, nothing applied
    drop_after_share: float = 0.0  # applied, then the connection closed without an answer
    stall_share: float = 0.0  # held `stall_s` before being applied: a client with a shorter timeout gives up
    stall_s: float = 2.0
    reject_share: float = 0.0  # records answered "error" in an otherwise successful batch
    reject_ids: frozenset[str] = frozenset()  # these sourcedIds are always answered "error"
    seed: int = 0
    # What was injected so far, by BatchFault value and "rejected record": lets a test prove its faults fired.
    injected: Counter[str] = field(default_factory=Counter, compare=False)

    def __post_init__(self) -> None:
        shares = (self.error_share, self.throttle_share, self.drop_before_share, self.drop_after_share, self.stall_share)
        if not all(0.0 <= share <= 1.0 for share in (*shares, self.reject_share)) or sum(shares) > 1.0:
            raise ValueError("fault shares must be between 0 and 1, and the per-request ones sum to at most 1")
        self.reject_ids = frozenset(self.reject_ids)


class BatchFault(Enum):
    """What the sandbox does to one batch request instead of (or after) applying it normally."""

    NONE = "none"
    ERROR = "503"
    THROTTLE = "429"
    DROP_BEFORE = "drop before applying"
    DROP_AFTER = "drop after applying"
    STALL = "stall"


REJECTION_MESSAGE = "rejected by the LMS (injected fault)"


class _FaultInjector:
    """Adds latency, chooses each batch request's fault, and decides which records are rejected."""

    def __init__(self, faults: SandboxFaults) -> None:
        self.faults = faults
        self._lock = threading.Lock()
        self._failed = 0
        self._throttled = 0
        self._seen: Counter[str] = Counter()

    async def delay(self) -> None:
        if self.faults.latency_s > 0:
            await asyncio.sleep(self.faults.latency_s)

    def batch_fault(self, key: str) -> BatchFault:
        fault = self._choose(key)
        if fault is not BatchFault.NONE:
            with self._lock:
                self.faults.injected[fault.value] += 1
        return fault

    def _choose(self, key: str) -> BatchFault:
        faults = self.faults
        with self._lock:
            self._seen[key] += 1
            attempt = self._seen[key]
            if self._failed < faults.fail_first_batches:
                self._failed += 1
                return BatchFault.ERROR
            if self._throttled < faults.throttle_first_batches:
                self._throttled += 1
                return BatchFault.THROTTLE
        draw = random.Random(f"{faults.seed}\x1f{key}\x1f{attempt}").random()
        for fault, share in (
            (BatchFault.ERROR, faults.error_share),
            (BatchFault.THROTTLE, faults.throttle_share),
            (BatchFault.DROP_BEFORE, faults.drop_before_share),
            (BatchFault.DROP_AFTER, faults.drop_after_share),
            (BatchFault.STALL, faults.stall_share),
        ):
            if draw < share:
                return fault
            draw -= share
        return BatchFault.NONE

    def rejected(self, operations: Sequence[Mapping[str, Any]]) -> frozenset[str]:
        """The sourcedIds of `operations` the LMS answers with a per-record error this time."""
        faults = self.faults
        if not faults.reject_ids and faults.reject_share <= 0:
            return frozenset()
        ids = {op.get("sourcedId") for op in operations if isinstance(op.get("sourcedId"), str)}
        rejected = frozenset(
            sid for sid in ids
            if sid in faults.reject_ids or random.Random(f"{faults.seed}\x1f{sid}").random() < faults.reject_share
        )
        with self._lock:
            faults.injected["rejected record"] += len(rejected)
        return rejected


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _SandboxLmsApi:
    """The endpoints, sharing one store, one token and one set of fault counters."""

    def __init__(self, store: SandboxLmsStore, token: str, faults: SandboxFaults) -> None:
        self._store = store
        self._token = token.encode("utf-8")
        self._injector = _FaultInjector(faults)

    def _tenant_and_entity(self, request: Request) -> tuple[str, str]:
        """Checks common to every tenant endpoint: the token first, then the entity."""
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        valid = hmac.compare_digest(credential.strip().encode("utf-8"), self._token)
        if scheme.lower() != "bearer" or not valid:
            raise HTTPException(
                401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"}
            )
        entity = request.path_params["entity"]
        if entity not in ENTITIES:
            raise HTTPException(404, "unknown entity")
        return request.path_params["tenant"], entity

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def post_batch(self, request: Request) -> Response:
        tenant, entity = self._tenant_and_entity(request)
        key = _idempotency_key(request)
        operations = _operations(await request.body())
        # Slow after the body arrived, so a client timeout can hide a batch that still gets applied.
        await self._injector.delay()
        fault = self._injector.batch_fault(key)
        if fault is BatchFault.ERROR:
            return _error(503, "injected failure: the sandbox LMS is unavailable")
        if fault is BatchFault.THROTTLE:
            retry_after = {"Retry-After": str(self._injector.faults.retry_after_s)}
            return _error(429, "rate limit exceeded", headers=retry_after)
        if fault is BatchFault.DROP_BEFORE:
            return await _drop_connection(request)
        if fault is BatchFault.STALL:
            await asyncio.sleep(self._injector.faults.stall_s)
        rejected = self._injector.rejected(operations)
        try:
            outcome = await run_in_threadpool(
                self._store.apply_batch, tenant, entity, operations, key, rejected
            )
        except IdempotencyKeyReused:
            return _error(422, "Idempotency-Key was already used with a different request")
        _log_batch(tenant, entity, outcome)
        if fault is BatchFault.DROP_AFTER:  # applied and committed, but the answer is lost
            return await _drop_connection(request)
        headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
        return Response(outcome.response_json, media_type="application/json", headers=headers)

    async def list_records(self, request: Request) -> Response:
        tenant, entity = self._tenant_and_entity(request)
        limit = _limit(request)
        cursor = request.query_params.get("cursor")
        await self._injector.delay()
        try:
            items, next_cursor = await run_in_threadpool(
                self._store.list_records, tenant, entity, limit, cursor
            )
        except InvalidCursor:
            return _error(400, "invalid cursor")
        return JSONResponse({"items": items, "next_cursor": next_cursor})


async def _drop_connection(request: Request) -> Response:
    """Close the socket without answering, as a crashed proxy or a lost network would.

    ASGI cannot abort a connection, so this reaches uvicorn's transport through the bound
    `receive` it hands the app (its h11 and httptools protocols both keep it there).
    """
    transport = getattr(getattr(request.receive, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("dropping a connection needs the sandbox served by uvicorn")
    transport.close()
    # Let uvicorn notice the closed connection first, so it writes nothing and logs no error.
    await asyncio.sleep(0)
    return Response(status_code=204)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.detail, exc.headers)


async def _client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=400)  # nobody reads it; keeps a hung-up client out of the 500 log


async def _server_error(request: Request, exc: Exception) -> Response:
    return _error(500, "internal error")  # uvicorn logs the traceback


def create_app(db_path: Path, token: str, faults: SandboxFaults | None = None) -> Starlette:
    """The sandbox LMS as an ASGI app; `token` is the one bearer token it accepts."""
    if not token:
        raise ValueError("the sandbox LMS needs a non-empty token")  # "" would accept "Bearer "
    api = _SandboxLmsApi(SandboxLmsStore(db_path), token, faults or SandboxFaults())
    return Starlette(
        routes=[
            Route("/api/v1/health", api.health, methods=["GET"]),
            Route("/api/v1/tenants/{tenant}/{entity}/batch", api.post_batch, methods=["POST"]),
            Route("/api/v1/tenants/{tenant}/{entity}", api.list_records, methods=["GET"]),
        ],
        exception_handlers={
            HTTPException: _http_error,
            ClientDisconnect: _client_gone,
            Exception: _server_error,
        },
    )


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        length = f"1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        raise HTTPException(400, f"an Idempotency-Key header of {length} is required")
    return key


def _operations(body: bytes) -> list[dict[str, Any]]:
    """The body's operations; a malformed body is a 400 (broken rules of one operation are not)."""
    try:
        parsed = json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        raise HTTPException(400, "the body is not valid JSON") from None
    operations = parsed.get("operations") if isinstance(parsed, dict) else None
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise HTTPException(400, "the body must be an object with an 'operations' list of objects")
    if len(operations) > MAX_BATCH_OPERATIONS:
        raise HTTPException(400, f"a batch holds at most {MAX_BATCH_OPERATIONS} operations")
    return operations


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", str(DEFAULT_PAGE_SIZE))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise HTTPException(400, f"limit must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


def _log_batch(tenant: str, entity: str, outcome: BatchOutcome) -> None:
    """Counts per status only: the results' sourcedIds and errors stay out of the log."""
    counts = Counter(result["status"] for result in outcome.response["results"])
    logger.info(
        "batch tenant=%s entity=%s replayed=%s %s",
        tenant,
        entity,
        outcome.replayed,
        dict(sorted(counts.items())),
    )
