"""REST client for the LMS API described in docs/lms-api.md (batched writes, paginated reads).

The LMS is the one place a sync writes to, so this client is where retries must be safe: every
retry of a batch carries the same Idempotency-Key, which lets the LMS apply a batch at most once
even when an answer is lost to a timeout. Nothing here knows Dagster; a resource wraps it.
Record values are student personal data, so they are never logged or put in exception messages.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, NamedTuple
from urllib.parse import quote

import requests

from rostersync_assets.connectors.http_auth import AuthorizationHeader

# Limits fixed by the API contract (docs/lms-api.md); the sandbox LMS enforces the same numbers.
MAX_BATCH_OPERATIONS = 1000
MAX_PAGE_SIZE = 1000

logger = logging.getLogger("rostersync.lms")

# Only these answers say "try again later"; any other 4xx means the request itself is wrong.
_RETRYABLE_4XX = frozenset({429})
# No (complete) answer arrived: the request may or may not have been applied; the same key makes
# the retry safe either way. ChunkedEncodingError is a connection broken in the middle of a body.
_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


_json_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


class LmsOperation(NamedTuple):
    """One write in a batch: upsert a full record, or deactivate a record by its sourcedId.

    `record` is a mapping, or the record already encoded as a JSON object text (what a change set
    carries): that text goes into the request body as is, because decoding every record only to
    re-encode it cost as much CPU as the rest of the client. A named tuple: a sync builds one per
    record it sends.
    """

    op: Literal["upsert", "deactivate"]
    sourced_id: str
    record: Mapping[str, str] | str | None = None

    def to_json_text(self) -> str:
        """The operation as JSON text: keys op, sourcedId and record (when there is one), in that order."""
        # The json module's C string encoder (what json.dumps uses for a str, without its per-call set-up).
        head = f'{{"op":{_json_string(self.op)},"sourcedId":{_json_string(self.sourced_id)}'
        if self.record is None:
            return head + "}"
        if isinstance(self.record, str):
            # A cheap guard against passing some other string; the LMS validates the rest (400 if malformed).
            if not (self.record.startswith("{") and self.record.endswith("}")):
                raise ValueError(f"the record of operation {self.op} {self.sourced_id!r} is not a JSON object text")
            return f'{head},"record":{self.record}}}'
        return f'{head},"record":{json.dumps(dict(self.record), separators=(",", ":"))}}}'


def batch_body(operations: Sequence[LmsOperation]) -> bytes:
    """The body of a batch request, `{"operations": [...]}` as UTF-8: the same operations give the same bytes."""
    return f'{{"operations":[{",".join(operation.to_json_text() for operation in operations)}]}}'.encode()


class LmsResult(NamedTuple):
    """The LMS's verdict on one operation: created, updated, unchanged, deactivated or error."""

    sourced_id: str
    status: str
    error: str | None = None


class BatchResults(list[LmsResult]):
    """One result per operation, in order, and whether the LMS replayed a stored answer.

    A replay means this exact batch was applied before (its key was seen): the caller learns the
    outcome of an attempt whose answer it lost, and that any per-record error in it is old news.
    """

    def __init__(self, results: Sequence[LmsResult], *, replayed: bool) -> None:
        super().__init__(results)
        self.replayed = replayed


class LmsError(Exception):
    """A request the LMS did not accept; names where it failed, never what the records contained."""

    def __init__(
        self,
        reason: str,
        *,
        tenant: str,
        entity: str,
        status: int | None,
        attempts: int,
        idempotency_key: str | None = None,
    ) -> None:
        self.tenant = tenant
        self.entity = entity
        self.status = status
        self.attempts = attempts
        self.idempotency_key = idempotency_key
        where = f"LMS request for tenant={tenant!r} entity={entity!r}"
        if idempotency_key is not None:
            where += f" Idempotency-Key={idempotency_key!r}"
        http = f"HTTP {status}" if status is not None else "no HTTP answer"
        super().__init__(f"{where} failed after {attempts} attempt(s): {http}: {reason}")


class LmsClient:
    """Sends batches to and reads records from one LMS, retrying what is safe to retry.

    Retried: connection errors (a dropped connection included), timeouts, 5xx (exponential
    backoff with full jitter) and 429 (waiting the server's `Retry-After`). Not retried: other
    4xx, which a retry cannot fix. Safe to share between threads: a requests.Session is not, so
    each thread gets its own (with its own connection), all closed by `close()`.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 30.0,
        max_attempts: int = 6,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._token = token
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LmsClient(base_url={self._base_url!r})"

    def __enter__(self) -> LmsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    @property
    def _session(self) -> requests.Session:
        """This thread's session, created on first use."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = AuthorizationHeader(f"Bearer {self._token}")  # not a header: see http_auth
            session.headers["Accept"] = "application/json"
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def send_batch(
        self,
        tenant: str,
        entity: str,
        operations: Sequence[LmsOperation],
        idempotency_key: str,
    ) -> BatchResults:
        """Apply `operations` in one batch; returns one result per operation, in order, and `replayed`.

        The caller chooses the key and must derive it from what the batch is (for example district,
        delivery, entity and content), never from the time or the attempt, so that a re-run replays
        instead of re-applying. Keys are unique per tenant: reusing one for another body is 422.
        """
        if len(operations) > MAX_BATCH_OPERATIONS:
            raise ValueError(
                f"a batch holds at most {MAX_BATCH_OPERATIONS} operations, got {len(operations)}"
            )
        response = self._request(
            "POST",
            f"{self._entity_url(tenant, entity)}/batch",
            tenant=tenant,
            entity=entity,
            idempotency_key=idempotency_key,
            data=batch_body(operations),
            headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
        )
        results = _parse_results(response, operations)
        if results is None:
            raise LmsError(
                "the answer does not hold one result per operation, in order",
                tenant=tenant,
                entity=entity,
                status=response.status_code,
                attempts=1,
                idempotency_key=idempotency_key,
            )
        return BatchResults(results, replayed=response.headers.get("Idempotent-Replayed") == "true")

    def iter_records(
        self, tenant: str, entity: str, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[dict]:
        """Every record the LMS holds for (tenant, entity), active or not, ordered by sourcedId."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        url = self._entity_url(tenant, entity)
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": page_size}
            if cursor is not None:
                params["cursor"] = cursor
            page = self._request("GET", url, tenant=tenant, entity=entity, params=params).json()
            yield from page["items"]
            cursor = page.get("next_cursor")
            if cursor is None:
                return

    def _entity_url(self, tenant: str, entity: str) -> str:
        return f"{self._base_url}/api/v1/tenants/{quote(tenant, safe='')}/{quote(entity, safe='')}"

    def _request(
        self,
        method: str,
        url: str,
        *,
        tenant: str,
        entity: str,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """One logical request: retried until a 2xx, a non-retryable answer or max_attempts."""
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = self._session.request(method, url, timeout=self._timeout_s, **kwargs)
            except _TRANSPORT_ERRORS as exc:
                outcome, status, delay = type(exc).__name__, None, self._backoff(attempt)
            else:
                if response.ok:
                    return response
                status = response.status_code
                outcome = f"HTTP {status}"
                if status < 500 and status not in _RETRYABLE_4XX:
                    raise LmsError(
                        _server_reason(response),
                        tenant=tenant,
                        entity=entity,
                        status=status,
                        attempts=attempt,
                        idempotency_key=idempotency_key,
                    )
                delay = _retry_after_s(response)
                if delay is None:
                    delay = self._backoff(attempt)
            if attempt == self._max_attempts:
                break
            logger.warning(
                "LMS %s tenant=%s entity=%s attempt %d/%d: %s; retrying in %.2fs",
                method,
                tenant,
                entity,
                attempt,
                self._max_attempts,
                outcome,
                delay,
            )
            self._sleep(delay)
        raise LmsError(
            f"gave up: {outcome}",
            tenant=tenant,
            entity=entity,
            status=status,
            attempts=self._max_attempts,
            idempotency_key=idempotency_key,
        )

    def _backoff(self, attempt: int) -> float:
        """Full jitter: spreads the retries of many clients instead of syncing them into waves."""
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)


def _retry_after_s(response: requests.Response) -> float | None:
    """The server's `Retry-After` in seconds (the HTTP-date form is not used by the contract)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _server_reason(response: requests.Response) -> str:
    """The `error` text of a JSON error answer; the contract keeps record values out of it."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error)[:200] if error else response.reason or "error"


# What an LMS error may quote from the record it rejects that we can recognise as personal: email addresses
# and dates (birth dates). The contract keeps values out of errors; this holds if an LMS does not.
_PERSONAL_IN_ERRORS = re.compile(
    r"[^\s@'\"<>(),;]+@[^\s@'\"<>(),;]+|\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b"
)
MAX_ERROR_CHARS = 200


def redact_lms_error(error: object) -> str | None:
    """An LMS's per-record error as it may be kept (ledger) and shown (metadata, logs): emails and dates
    replaced by `<redacted>`, at most MAX_ERROR_CHARS characters."""
    if error is None:
        return None
    return _PERSONAL_IN_ERRORS.sub("<redacted>", str(error))[:MAX_ERROR_CHARS]


def _parse_results(
    response: requests.Response, operations: Sequence[LmsOperation]
) -> list[LmsResult] | None:
    """The per-operation results, or None when they do not line up with the operations sent."""
    try:
        raw = response.json()["results"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(raw, list) or len(raw) != len(operations):
        return None
    results = []
    for item, operation in zip(raw, operations):
        if not isinstance(item, dict) or item.get("sourcedId") != operation.sourced_id:
            return None
        error = item.get("error")
        results.append(LmsResult(operation.sourced_id, str(item.get("status")), None if error is None else redact_lms_error(error)))
    return results
