"""Cutting a change set into LMS batches and applying them in order, without knowing HTTP or SQL.

The Dagster layer passes two callables: `send` (the LMS client) and `record` (the ledger). Keeping
the loop here keeps its rules testable on their own: batches follow the change set's apply order,
each carries an idempotency key derived from district, delivery, entity, batch number and its
content (a resumed run that re-sends the same batch gets the LMS's stored answer, never a second
write), and a batch's outcome is recorded before the next batch is sent.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pandas as pd

from rostersync_assets.sync.diff import DEACTIVATE_OP

DEFAULT_BATCH_SIZE = 500


@dataclass(frozen=True)
class PlannedChange:
    """One record's change: the LMS operation plus what the ledger keeps (hashes, source line)."""

    op: str
    sourced_id: str
    line: int
    hash_before: str
    hash_after: str
    record: dict[str, str] | None
    # The school the record belongs to and a digest of its natural key (never the key itself: it may
    # hold a username): the sync state keeps both so per-school limits and id-churn detection can
    # judge records that a later delivery no longer contains.
    school: str = ""
    natural_key: str = ""

    @property
    def lms_op(self) -> str:
        return "deactivate" if self.op == DEACTIVATE_OP else "upsert"


@dataclass(frozen=True)
class PlannedBatch:
    """Consecutive changes of one entity and one LMS operation, sent as one request."""

    entity: str
    number: int
    idempotency_key: str
    changes: tuple[PlannedChange, ...]


def idempotency_key(district: str, delivery_id: str, entity: str, number: int, changes: Sequence[PlannedChange]) -> str:
    """Stable for the same batch of the same delivery; different as soon as the content differs."""
    digest = hashlib.sha256()
    for change in changes:
        digest.update(f"{change.lms_op}\x1f{change.sourced_id}\x1f{change.hash_after}\x1e".encode())
    scope = f"{district}\x1f{delivery_id}\x1f{entity}\x1f{number}\x1f{digest.hexdigest()}"
    return f"rs-{hashlib.sha256(scope.encode()).hexdigest()[:40]}"


def _planned(row: tuple) -> PlannedChange:
    op, sourced_id, line, before, after, record, school, natural_key = row
    return PlannedChange(
        op=op, sourced_id=sourced_id, line=int(line), hash_before=before, hash_after=after,
        record=json.loads(record) if record else None, school=school or "", natural_key=natural_key or "",
    )


def plan_batches(changes: pd.DataFrame, *, district: str, delivery_id: str, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[PlannedBatch]:
    """Batches in apply order; a batch never mixes entities or upserts with deactivations."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    ordered = changes.sort_values("seq")
    kind = ordered["op"].eq(DEACTIVATE_OP)
    group = (ordered["entity"].ne(ordered["entity"].shift()) | kind.ne(kind.shift())).cumsum()
    number = 0
    columns = ["op", "sourcedId", "line", "hash_before", "hash_after", "record", "school", "natural_key"]
    for _, run in ordered.groupby(group, sort=True):
        entity = str(run["entity"].iloc[0])
        rows = [_planned(r) for r in run.reindex(columns=columns, fill_value="")[columns].itertuples(index=False, name=None)]
        for start in range(0, len(rows), batch_size):
            chunk = tuple(rows[start : start + batch_size])
            yield PlannedBatch(entity, number, idempotency_key(district, delivery_id, entity, number, chunk), chunk)
            number += 1


Statuses = list[tuple[str, str | None]]


@dataclass
class PushSummary:
    """What the LMS answered, per entity and status; `failed` counts per-record errors."""

    batches: int = 0
    by_entity: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, entity: str, statuses: Statuses) -> None:
        self.batches += 1
        self.by_entity.setdefault(entity, Counter()).update(status for status, _ in statuses)

    def total(self, status: str) -> int:
        return sum(counter[status] for counter in self.by_entity.values())

    @property
    def failed(self) -> int:
        return self.total("error")


def push_changes(
    batches: Iterator[PlannedBatch],
    *,
    send: Callable[[PlannedBatch], Statuses],
    record: Callable[[PlannedBatch, Statuses], None],
    on_batch: Callable[[PlannedBatch, Statuses], None] | None = None,
) -> PushSummary:
    """Send each batch, record its outcome, then go on; an exception stops with all prior work kept."""
    summary = PushSummary()
    for batch in batches:
        statuses = send(batch)
        record(batch, statuses)
        summary.add(batch.entity, statuses)
        if on_batch is not None:
            on_batch(batch, statuses)
    return summary
