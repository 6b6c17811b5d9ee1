"""Drift: records changed, deactivated or added in the LMS by someone other than rostersync.

The change set compares a delivery with the sync state (what the LMS last acknowledged), never with
the LMS itself, so an edit made directly in the LMS is invisible to it. This module compares three
sides of every record of one entity, each as (sourcedId, content hash, active):

- the **sync state**: what rostersync last got acknowledged;
- the **live LMS**: its own listing, hashed with the sync's `content_hash`, streamed page by page;
- the **last delivery**: what tonight's change set will write (`delivery_side`).

LMS against sync state gives the drift kind; the delivery decides what the next sync does with it:

- the delivery does not change the record: the diff (which compares with the sync state) writes
  nothing, so the LMS-side edit stays; it is reported every night until someone resolves it;
- the delivery changes it, to something other than what the LMS now shows: a **conflict**; the
  delivery's version is written (the district's SIS is the system of record), but named by id first;
- the delivery makes the same change the LMS already shows (both dropped an enrollment): converged,
  nothing is lost, not a conflict.

Reports carry counts and sourcedIds only, never record contents (student personal data).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice

import numpy as np
import pandas as pd

from rostersync_assets.sync.diff import DEACTIVATE_OP
from rostersync_assets.sync.payloads import content_hash

DRIFT_KINDS = ("changed_in_lms", "deactivated_in_lms", "reactivated_in_lms", "added_in_lms", "missing_in_lms")
SAMPLE_SIZE = 10
# The LMS list endpoint's largest page: compare one page's worth of records at a time.
CHUNK_SIZE = 1000

LmsRow = tuple[str, str, bool]


def lms_side(records: Iterable[Mapping[str, object]], entity: str) -> Iterator[LmsRow]:
    """(sourcedId, content hash, active) of each listed LMS record, hashed exactly as the sync hashes rows.

    Lazy: fed from `LmsClient.iter_records`, it holds one page of the listing at a time.
    """
    for record in records:
        yield str(record["sourcedId"]), content_hash(record, entity), bool(record["active"])


def delivery_side(changes: pd.DataFrame, entity: str) -> pd.DataFrame:
    """What the change set writes for `entity`: sourcedId, content hash and active after the write.

    A record absent from the change set is one the delivery leaves as the sync state has it.
    """
    rows = changes[changes["entity"] == entity]
    deactivating = rows["op"].eq(DEACTIVATE_OP)
    return pd.DataFrame(
        {
            "sourcedId": rows["sourcedId"].astype(str).to_numpy(),
            "content_hash": rows["hash_after"].where(~deactivating, rows["hash_before"]).astype(str).to_numpy(),
            "active": (~deactivating).to_numpy(dtype=bool),
        }
    )


@dataclass(frozen=True)
class EntityDrift:
    """One entity's drift: records per kind, how many of them conflict with the delivery, samples by id."""

    entity: str
    state_active: int
    lms_active: int
    delivery_changes: int
    counts: Mapping[str, int]
    conflicts: Mapping[str, int]
    samples: Mapping[str, tuple[str, ...]]
    conflict_samples: Mapping[str, tuple[str, ...]]

    @property
    def drifted(self) -> int:
        return sum(self.counts.values())

    @property
    def conflicted(self) -> int:
        return sum(self.conflicts.values())


@dataclass(frozen=True)
class DriftReport:
    """Drift of every entity of one district; renders the Dagster check's tables."""

    entities: tuple[EntityDrift, ...]

    def total(self, kind: str) -> int:
        return sum(e.counts[kind] for e in self.entities)

    @property
    def drifted(self) -> int:
        return sum(e.drifted for e in self.entities)

    @property
    def conflicted(self) -> int:
        return sum(e.conflicted for e in self.entities)

    def by_entity_markdown(self) -> str:
        """The three-way view per entity: sync state, live LMS, tonight's delivery, drift and conflicts."""
        header = "| entity | sync state active | LMS active | delivery changes | " + " | ".join(DRIFT_KINDS) + " | conflicts |"
        rows = [
            f"| {e.entity} | {e.state_active} | {e.lms_active} | {e.delivery_changes} | "
            + " | ".join(str(e.counts[k]) for k in DRIFT_KINDS)
            + f" | {e.conflicted} |"
            for e in self.entities
        ]
        return "\n".join([header, "|---" * (len(DRIFT_KINDS) + 5) + "|", *rows])

    def samples_markdown(self) -> str:
        """Up to SAMPLE_SIZE sourcedIds per entity and kind, and those the delivery overwrites."""
        rows = [
            f"| {e.entity} | {kind} | {e.counts[kind]} | {', '.join(e.samples[kind])} | {', '.join(e.conflict_samples[kind]) or '-'} |"
            for e in self.entities
            for kind in DRIFT_KINDS
            if e.counts[kind]
        ]
        if not rows:
            return "no drift"
        header = "| entity | kind | records | sample sourcedIds | conflicts: the delivery writes them too |\n|---|---|---|---|---|"
        return "\n".join([header, *rows])

    def conflict_lines(self) -> list[str]:
        """One line per entity and kind with conflicts, ids sampled: for the run log."""
        return [
            f"{e.entity}: {e.conflicts[kind]} record(s) {kind} that tonight's delivery also changes; the delivery's "
            f"version is written over the LMS-side edit: {', '.join(e.conflict_samples[kind])}"
            for e in self.entities
            for kind in DRIFT_KINDS
            if e.conflicts[kind]
        ]


@dataclass(frozen=True)
class _Side:
    """One side indexed by sourcedId (the last row of an id wins, as the last write does in the LMS)."""

    index: pd.Index
    hashes: np.ndarray
    active: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _Side:
        unique = frame.drop_duplicates("sourcedId", keep="last")
        return cls(
            pd.Index(unique["sourcedId"].astype(str).to_numpy(dtype=object)),
            unique["content_hash"].astype(str).to_numpy(dtype=object),
            unique["active"].astype(bool).to_numpy(),
        )

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position or -1, hash or "", active or False) of each id."""
        positions = self.index.get_indexer(ids)
        known = positions >= 0
        hashes = np.full(len(ids), "", dtype=object)
        active = np.zeros(len(ids), dtype=bool)
        hashes[known] = self.hashes[positions[known]]
        active[known] = self.active[positions[known]]
        return positions, hashes, active


def _differs(a_active: np.ndarray, a_hash: np.ndarray, b_active: np.ndarray, b_hash: np.ndarray) -> np.ndarray:
    """Whether two sides show a record differently: an inactive or unknown record shows nothing."""
    return (a_active != b_active) | (a_active & b_active & (a_hash != b_hash))


@dataclass
class _Tally:
    """Running counts and smallest-id samples, so nothing per record outlives its chunk."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DRIFT_KINDS, 0))
    conflicts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DRIFT_KINDS, 0))
    samples: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in DRIFT_KINDS})
    conflict_samples: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in DRIFT_KINDS})

    def add(self, kind: str, ids: np.ndarray, conflict: np.ndarray) -> None:
        self.counts[kind] += len(ids)
        self.conflicts[kind] += int(conflict.sum())
        self.samples[kind] = heapq.nsmallest(SAMPLE_SIZE, chain(self.samples[kind], ids))
        self.conflict_samples[kind] = heapq.nsmallest(SAMPLE_SIZE, chain(self.conflict_samples[kind], ids[conflict]))


def _chunks(rows: Iterable[LmsRow], size: int) -> Iterator[Sequence[LmsRow]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def entity_drift(
    entity: str,
    state: pd.DataFrame,
    lms: Iterable[LmsRow],
    delivery: pd.DataFrame,
    *,
    chunk_size: int = CHUNK_SIZE,
) -> EntityDrift:
    """Compare the live LMS (streamed) with the sync state, and each drifted record with the delivery.

    `state` and `delivery` are frames of sourcedId, content_hash, active; `lms` yields the same
    triples (see `lms_side`). Kinds: changed (both active, hashes differ), deactivated (active in the
    state, inactive in the LMS), reactivated (the reverse), added (active in the LMS, unknown to the
    state; inactive unknown records show nothing and are ignored), missing (active in the state,
    absent from the listing; an inactive record the LMS purged is not drift).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    known_state, known_delivery = _Side.of(state), _Side.of(delivery)
    seen = np.zeros(len(known_state.index), dtype=bool)
    tally = _Tally()
    lms_active = 0
    for chunk in _chunks(lms, chunk_size):
        ids = np.array([row[0] for row in chunk], dtype=object)
        l_hash = np.array([row[1] for row in chunk], dtype=object)
        l_active = np.array([row[2] for row in chunk], dtype=bool)
        lms_active += int(l_active.sum())
        positions, s_hash, s_active = known_state.lookup(ids)
        known = positions >= 0
        seen[positions[known]] = True
        kinds = {
            "changed_in_lms": known & s_active & l_active & (l_hash != s_hash),
            "deactivated_in_lms": known & s_active & ~l_active,
            "reactivated_in_lms": known & ~s_active & l_active,
            "added_in_lms": ~known & l_active,
        }
        drifted = np.logical_or.reduce(list(kinds.values()))
        if not drifted.any():
            continue
        d_positions, d_hash, d_active = known_delivery.lookup(ids)
        changes = (d_positions >= 0) & _differs(d_active, d_hash, s_active, s_hash)
        conflict = changes & _differs(d_active, d_hash, l_active, l_hash)
        for kind, mask in kinds.items():
            tally.add(kind, ids[mask], conflict[mask])
    missing = known_state.active & ~seen
    if missing.any():
        ids = known_state.index.to_numpy()[missing]
        d_positions, d_hash, d_active = known_delivery.lookup(ids)
        changes = (d_positions >= 0) & _differs(d_active, d_hash, known_state.active[missing], known_state.hashes[missing])
        tally.add("missing_in_lms", ids, changes & d_active)
    return EntityDrift(
        entity=entity,
        state_active=int(known_state.active.sum()),
        lms_active=lms_active,
        delivery_changes=_delivery_changes(known_state, known_delivery),
        counts=tally.counts,
        conflicts=tally.conflicts,
        samples={k: tuple(v) for k, v in tally.samples.items()},
        conflict_samples={k: tuple(v) for k, v in tally.conflict_samples.items()},
    )


def _delivery_changes(state: _Side, delivery: _Side) -> int:
    """Records the delivery shows differently from the sync state: what the next sync writes."""
    _, s_hash, s_active = state.lookup(delivery.index.to_numpy())
    return int(_differs(delivery.active, delivery.hashes, s_active, s_hash).sum())
