"""Cutting a change set into LMS batches and applying them in order, without knowing HTTP or SQL.

The Dagster layer passes two callables: `send` (the LMS client) and `record` (the ledger). Keeping
the loop here keeps its rules testable on their own:

- Batches never mix entities or upserts with deactivations, and groups of them (one entity, one
  operation) go in the change set's apply order: a group starts only when the previous one is
  acknowledged and recorded, so parents are written before children. Within a group up to
  `concurrency` batches are in flight at once.
- Batches' outcomes are handed to `record` (one atomic ledger write that also advances the sync
  state) on a writer thread of their own, so the LMS and the ledger work at the same time: every
  batch answered since the last write goes in the next one, so when the ledger is slower than the
  LMS, one commit serves several batches (with random sourcedIds each commit rewrites a page per
  record per index: fewer commits, fewer pages).
- The idempotency key is derived from district, delivery, entity and the batch's content, not its
  position: a resumed run re-plans only what was not acknowledged, and because every batch but a
  group's last is full, dropping whole acknowledged batches leaves the others cut exactly as before,
  so a batch the killed run sent but never recorded is re-sent with its old key and replayed by
  the LMS, never applied twice.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd

from rostersync_assets.sync.diff import DEACTIVATE_OP

DEFAULT_BATCH_SIZE = 500
DEFAULT_CONCURRENCY = 4
ERROR_STATUS = "error"
REJECTED_SAMPLE_SIZE = 10


class PlannedChange(NamedTuple):
    """One record's change: the LMS operation plus what the ledger keeps (hashes, source line).

    A named tuple, not a dataclass: a change set makes one per changed record (millions on an
    onboarding), and a frozen dataclass's field-by-field __init__ cost more than sending the record.
    """

    op: str
    sourced_id: str
    line: int
    hash_before: str
    hash_after: str
    # The record as the JSON object text the diff produced, None for a deactivation: carried as text
    # and spliced into the request body as is (decoding it here and re-encoding it for the request
    # cost a fifth of the sync's CPU).
    record: str | None
    # The school the record belongs to and a digest of its natural key (never the key itself: it may
    # hold a username): the sync state keeps both so per-school limits and id-churn detection can
    # judge records that a later delivery no longer contains.
    school: str = ""
    natural_key: str = ""
    # The delivered file the row came from ("" reads as `<entity>.csv`): a Clever district's users come
    # from students.csv and teachers.csv, and the ledger must name the right one.
    source_file: str = ""

    @property
    def lms_op(self) -> str:
        return "deactivate" if self.op == DEACTIVATE_OP else "upsert"


@dataclass(frozen=True)
class PlannedBatch:
    """Consecutive changes of one entity and one LMS operation, sent as one request.

    `number` is the batch's position in this run's plan (for logs); the key does not depend on it.
    """

    entity: str
    number: int
    idempotency_key: str
    changes: tuple[PlannedChange, ...]


def idempotency_key(district: str, delivery_id: str, entity: str, changes: Sequence[PlannedChange]) -> str:
    """Stable for the same batch of the same delivery in any run; different as soon as the content differs.

    A change set holds each record of an entity once, so content alone tells the batches of one
    delivery apart; the batch's position would change when a resumed run plans only the remainder.
    """
    digest = hashlib.sha256()
    for change in changes:
        digest.update(f"{change.lms_op}\x1f{change.sourced_id}\x1f{change.hash_after}\x1e".encode())
    scope = f"{district}\x1f{delivery_id}\x1f{entity}\x1f{digest.hexdigest()}"
    return f"rs-{hashlib.sha256(scope.encode()).hexdigest()[:40]}"


def _or(column: pd.Series, blank: str | None) -> list:
    """The column's values, with `blank` for each missing or empty one."""
    return [value or blank for value in column.tolist()]


def plan_batches(changes: pd.DataFrame, *, district: str, delivery_id: str, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[PlannedBatch]:
    """Batches in apply order; a batch never mixes entities or upserts with deactivations.

    Within a group, changes go by source line, then sourcedId: the file's order for upserts, and an
    order that does not depend on how the sync state happened to be read for deactivations (a
    resumed run must cut the same batches).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    ordered = changes.sort_values("seq")
    kind = ordered["op"].eq(DEACTIVATE_OP)
    group = (ordered["entity"].ne(ordered["entity"].shift()) | kind.ne(kind.shift())).cumsum()
    number = 0
    for _, run in ordered.groupby(group, sort=True):
        entity = str(run["entity"].iloc[0])
        run = run.sort_values(["line", "sourcedId"], kind="stable")
        # Column lists, not itertuples: several times faster on Arrow-backed strings. The changes are
        # made a batch at a time: made all at once, millions of them would sit in the garbage
        # collector's generations, and every collection would walk them again.
        columns = (
            run["op"].tolist(), run["sourcedId"].tolist(), run["line"].astype("int64").tolist(),
            run["hash_before"].tolist(), run["hash_after"].tolist(), _or(run["record"], None),
            _or(run["school"], ""), _or(run["natural_key"], ""), _or(run["source_file"], ""),
        )
        for start in range(0, len(run), batch_size):
            chunk = tuple(map(PlannedChange, *(column[start : start + batch_size] for column in columns)))
            yield PlannedBatch(entity, number, idempotency_key(district, delivery_id, entity, chunk), chunk)
            number += 1


Statuses = list[tuple[str, str | None]]


@dataclass(frozen=True)
class BatchAnswer:
    """The LMS's (status, error) per change of a batch, in order, and whether it was a replay."""

    statuses: Statuses
    replayed: bool = False


@dataclass
class PushSummary:
    """What the LMS answered, per entity and status; `failed` counts per-record errors.

    A record's error that a later exchange of the same run superseded is not counted.
    """

    batches: int = 0
    by_entity: dict[str, Counter[str]] = field(default_factory=dict)
    # (entity, sourcedId, error) of the first few rejected records: ids only, never values.
    rejected_sample: list[tuple[str, str, str | None]] = field(default_factory=list)

    def add(self, batch: PlannedBatch, statuses: Statuses, *, final: bool = True) -> None:
        self.batches += 1
        counter = self.by_entity.setdefault(batch.entity, Counter())
        for change, (status, error) in zip(batch.changes, statuses):
            if status != ERROR_STATUS:
                counter[status] += 1
            elif final:
                counter[status] += 1
                if len(self.rejected_sample) < REJECTED_SAMPLE_SIZE:
                    self.rejected_sample.append((batch.entity, change.sourced_id, error))

    def total(self, status: str) -> int:
        return sum(counter[status] for counter in self.by_entity.values())

    @property
    def failed(self) -> int:
        return self.total(ERROR_STATUS)


Exchange = tuple[PlannedBatch, Statuses]


def _exchange(batch: PlannedBatch, send: Callable[[PlannedBatch], BatchAnswer]) -> list[Exchange]:
    """Send one batch; when the LMS replays an old answer holding per-record errors, re-send those.

    A replay means this exact batch was applied before, in a run that may have been killed before
    recording it: its acknowledged records are news to record now, but its errors are stale (the
    records were not applied, so a new attempt is safe). They go again under a key derived from the
    batch's (`key.1`, `key.2`, ...), which a further re-run derives the same way and gets replayed.
    """
    answer = send(batch)
    exchanges = [(batch, answer.statuses)]
    root_key, generation = batch.idempotency_key, 0
    while answer.replayed:
        failed = tuple(c for c, (status, _) in zip(batch.changes, answer.statuses) if status == ERROR_STATUS)
        if not failed:
            break
        generation += 1
        batch = PlannedBatch(batch.entity, batch.number, f"{root_key}.{generation}", failed)
        answer = send(batch)
        exchanges.append((batch, answer.statuses))
    return exchanges


def _groups(batches: Iterable[PlannedBatch]) -> Iterator[Iterator[PlannedBatch]]:
    """Consecutive batches of one entity and one LMS operation: the unit that may run concurrently."""
    for _, group in itertools.groupby(batches, key=lambda b: (b.entity, b.changes[0].lms_op)):
        yield group


def push_changes(
    batches: Iterable[PlannedBatch],
    *,
    send: Callable[[PlannedBatch], BatchAnswer],
    record: Callable[[Sequence[Exchange]], None],
    concurrency: int = 1,
) -> PushSummary:
    """Send batches (up to `concurrency` at once within a group), recording outcomes as they arrive.

    `send` runs on worker threads and must be thread-safe. `record` runs on a writer thread of its
    own, one call at a time, and must write all the (batch, statuses) it is given atomically.
    When a batch fails for good, no further batch is sent, the ones in flight are awaited and
    recorded (they may have been applied), and the first error is raised: all acknowledged work
    is kept for the next run. When a write fails, nothing more is sent or written and its error is
    raised: the batches it held are re-sent by the next run under the same keys and replayed.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    summary = PushSummary()
    with (
        ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="lms-push") as pool,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-write") as writer,
    ):
        for group in _groups(batches):
            _GroupPush(group, pool, writer, concurrency, send, record, summary).run()
    return summary


class _GroupPush:
    """One group to the end (or to its first failure): every batch sent has been recorded when `run` returns.

    The LMS and the ledger work at the same time: answered batches wait for the writer thread, which
    takes all of them in its next write (one commit for several batches when the ledger is the slower
    side), while this thread keeps `concurrency` batches at the LMS. Besides the write in progress, at
    most `concurrency` answered batches wait for the ledger: beyond that no new batch is sent, so a
    slow ledger slows the sync instead of piling up applied-but-unrecorded batches.
    """

    def __init__(
        self,
        group: Iterator[PlannedBatch],
        pool: ThreadPoolExecutor,
        writer: ThreadPoolExecutor,
        concurrency: int,
        send: Callable[[PlannedBatch], BatchAnswer],
        record: Callable[[Sequence[Exchange]], None],
        summary: PushSummary,
    ) -> None:
        self._group, self._pool, self._writer = group, pool, writer
        self._concurrency, self._send, self._record, self._summary = concurrency, send, record, summary
        self._in_flight: set[Future[list[Exchange]]] = set()
        self._answered: list[list[Exchange]] = []  # waiting for the next write
        self._writing: Future[None] | None = None
        self._written: list[list[Exchange]] = []  # what the write in progress holds
        self._failure: BaseException | None = None
        self._write_failed = False

    def run(self) -> None:
        self._refill()
        while self._in_flight or self._writing is not None:
            waiting = self._in_flight | ({self._writing} if self._writing is not None else set())
            done, _ = wait(waiting, return_when=FIRST_COMPLETED)
            for future in done:
                if future is self._writing:
                    self._write_done(future)
                else:
                    self._answer(future)  # type: ignore[arg-type]
            self._start_write()  # before refilling: what it takes frees room for new batches
            self._refill()
        if self._failure is not None:
            raise self._failure

    def _refill(self) -> None:
        while self._failure is None and len(self._in_flight) < self._concurrency and len(self._answered) < self._concurrency:
            batch = next(self._group, None)
            if batch is None:
                return
            self._in_flight.add(self._pool.submit(_exchange, batch, self._send))

    def _answer(self, future: Future[list[Exchange]]) -> None:
        self._in_flight.discard(future)
        try:
            self._answered.append(future.result())
        except Exception as exc:  # kept, and raised once the batches in flight are recorded
            self._failure = self._failure or exc

    def _start_write(self) -> None:
        if self._writing is None and self._answered and not self._write_failed:
            self._written, self._answered = self._answered, []
            exchanges = [exchange for exchanges in self._written for exchange in exchanges]
            self._writing = self._writer.submit(self._record, exchanges)

    def _write_done(self, future: Future[None]) -> None:
        self._writing = None
        written, self._written = self._written, []
        try:
            future.result()
        except Exception as exc:  # nothing more is sent or written
            self._failure = self._failure or exc
            self._write_failed = True
            return
        for exchanges in written:
            for index, (sent, statuses) in enumerate(exchanges):
                self._summary.add(sent, statuses, final=index == len(exchanges) - 1)
