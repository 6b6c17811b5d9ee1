"""Safety rules: when a change set is too destructive to send without a person's approval.

The worst roster failures are mass deletions from a bad file: an empty or truncated export, a re-keyed
class table, a school missing from the export. A change set is judged per entity against what the LMS
holds (the sync state) before anything is written:

- **deactivation**: more than `max_deactivated_share` (10 %) of an entity's active records would be
  deactivated, district-wide or within one school;
- **update**: more than `max_updated_share` (75 %) would be updated (a shifted column, a re-encoded file);
- **id churn**: records deactivated whose natural key (username+orgs, classCode+school+terms, ...) equals
  that of a record created in the same change set: the same person or class under a new sourcedId, which
  would cost the LMS its history (grades, submissions). More than `max_id_churn` (1 %) holds.

School rules apply only to schools with at least `min_school_size` active records of the entity: a
3-student school losing 1 student is a normal night, not a bad file; the district-wide rule still
catches a school that vanishes from a large export when it matters district-wide. Any share of an
empty base is 0: a first sync is never held.

An empty or truncated bulk file is never read as "delete everyone": its missing records are
deactivations like any other, so the deactivation share holds them. Holds carry counts and at most
10 sourcedIds, never record contents (names, usernames and emails stay out of metadata and logs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import pandas as pd

from rostersync_assets.oneroster.frames import is_in
from rostersync_assets.oneroster.spec import ENTITIES

SYNC_MODE = "sync"
PREVIEW_MODE = "preview"
MODES = (SYNC_MODE, PREVIEW_MODE)

DEACTIVATION = "deactivation"
UPDATE = "update"
ID_CHURN = "id_churn"
HOLD_KINDS = (DEACTIVATION, UPDATE, ID_CHURN)
SAMPLE_SIZE = 10


class PolicyError(ValueError):
    """A safety policy field is unusable; the message names the field and the allowed range."""


@dataclass(frozen=True)
class SafetyPolicy:
    """One district's safety limits (the registry's `sync:` mapping); every field is optional.

    mode: `sync` writes to the LMS; `preview` runs everything up to the change set and writes nothing.
    max_deactivated_share / max_updated_share: share of an entity's active records (district-wide and per
        school) above which the change set is held.
    min_school_size: a school with fewer active records of an entity is judged district-wide only.
    max_id_churn: share of an entity's active records that may reappear under a new sourcedId.
    """

    mode: str = SYNC_MODE
    max_deactivated_share: float = 0.10
    max_updated_share: float = 0.75
    min_school_size: int = 20
    max_id_churn: float = 0.01

    @property
    def preview(self) -> bool:
        return self.mode == PREVIEW_MODE

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> SafetyPolicy:
        """A policy from YAML, every field checked: a typo must fail at registration, not on the night."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise PolicyError("must be a mapping of mode, max_deactivated_share, max_updated_share, min_school_size, max_id_churn")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise PolicyError(f"unknown field(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        if "mode" in raw:
            if raw["mode"] not in MODES:
                raise PolicyError(f"mode {raw['mode']!r} is not one of {', '.join(MODES)}")
            values["mode"] = raw["mode"]
        for name in ("max_deactivated_share", "max_updated_share", "max_id_churn"):
            if name in raw:
                values[name] = _share(name, raw[name])
        if "min_school_size" in raw:
            size = raw["min_school_size"]
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise PolicyError(f"min_school_size {size!r} must be a whole number of records, 0 or more")
            values["min_school_size"] = size
        return cls(**values)

    def changed_fields(self) -> dict[str, Any]:
        """The fields that differ from the defaults (what the registry writes back)."""
        default = SafetyPolicy()
        return {k: v for k, v in asdict(self).items() if v != getattr(default, k)}


def _share(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise PolicyError(f"{name} {value!r} must be a share between 0 and 1 (0.10 = 10 %)")
    return float(value)


DEFAULT_POLICY = SafetyPolicy()


@dataclass(frozen=True)
class Hold:
    """One rule tripped for one entity, district-wide (`school` "") or in one school."""

    kind: str
    entity: str
    school: str
    count: int
    base: int
    share: float
    limit: float
    sample: tuple[str, ...]

    def describe(self) -> str:
        where = f"school {self.school}" if self.school else "district-wide"
        verb = {DEACTIVATION: "deactivated", UPDATE: "updated", ID_CHURN: "re-keyed (same natural key, new sourcedId)"}[self.kind]
        return (
            f"{self.entity} {where}: {self.count} of {self.base} active record(s) {verb} "
            f"({self.share:.1%} > {self.limit * 100:g}%); e.g. {', '.join(self.sample) or '-'}"
        )


@dataclass(frozen=True)
class ScopeCounts:
    """Changes of one entity, district-wide (`school` "") or in one school, and the active base."""

    entity: str
    school: str
    active_before: int
    create: int
    update: int
    reactivate: int
    deactivate: int
    id_churn: int


@dataclass(frozen=True)
class SafetyVerdict:
    """What the safety rules found in one change set: the holds and the counts they were judged on."""

    holds: tuple[Hold, ...]
    counts: tuple[ScopeCounts, ...]

    @property
    def held(self) -> bool:
        return bool(self.holds)

    def holds_of(self, kind: str) -> list[Hold]:
        return [h for h in self.holds if h.kind == kind]

    def entity_counts(self) -> list[ScopeCounts]:
        return [c for c in self.counts if not c.school]

    def school_counts(self) -> list[ScopeCounts]:
        return [c for c in self.counts if c.school]

    def summary(self) -> str:
        """One line per hold: what an approval releases (for the ledger and the approve command)."""
        return "\n".join(h.describe() for h in self.holds) or "nothing held"

    def to_dict(self) -> dict[str, Any]:
        return {"holds": [asdict(h) for h in self.holds], "counts": [asdict(c) for c in self.counts]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SafetyVerdict:
        holds = tuple(Hold(**{**h, "sample": tuple(h["sample"])}) for h in data.get("holds", []))
        return cls(holds=holds, counts=tuple(ScopeCounts(**c) for c in data.get("counts", [])))


def _churned(changes: pd.DataFrame) -> pd.DataFrame:
    """Deactivations whose natural key reappears on a create of the same entity, with the new sourcedId."""
    keyed = changes[changes["natural_key"].fillna("").ne("")]
    gone = keyed[keyed["op"].eq("deactivate")]
    born = keyed[keyed["op"].eq("create")]
    if gone.empty or born.empty:
        return pd.DataFrame(columns=["seq", "entity", "school", "sourcedId", "new_sourcedId"])
    gone = gone[is_in(gone["natural_key"], born["natural_key"])]
    new_ids = born.drop_duplicates(["entity", "natural_key"])[["entity", "natural_key", "sourcedId"]]
    pairs = gone.merge(new_ids, on=["entity", "natural_key"], suffixes=("", "_new"))
    return pairs.rename(columns={"sourcedId_new": "new_sourcedId"})[["seq", "entity", "school", "sourcedId", "new_sourcedId"]]


def _active_counts(states: Mapping[str, pd.DataFrame]) -> pd.Series:
    """Active records per (entity, school), counted per school: a state of 8 M rows (its school often
    categorical, see `SyncLedger.load_state`) never becomes a frame of 8 M (entity, school) rows."""
    counts: dict[tuple[str, str], int] = {}
    for entity in ENTITIES:
        state = states.get(entity)
        if state is not None and not state.empty:
            per_school = state.loc[state["active"].astype(bool), "school"].value_counts(dropna=False)
            for school, count in per_school[per_school.gt(0)].items():
                key = (entity, "" if pd.isna(school) else str(school))
                counts[key] = counts.get(key, 0) + int(count)
    index = pd.MultiIndex.from_arrays([[e for e, _ in counts], [s for _, s in counts]], names=["entity", "school"])
    return pd.Series(list(counts.values()), index=index, dtype="int64", name="active_before")


def _scope_counts(changes: pd.DataFrame, states: Mapping[str, pd.DataFrame], churned: pd.DataFrame) -> pd.DataFrame:
    """One row per (entity, school) and per entity (school ""): active base, changes per op, churn."""
    frames = {
        **{op: changes.loc[changes["op"].eq(op), ["entity", "school"]] for op in ("create", "update", "reactivate", "deactivate")},
        "id_churn": churned[["entity", "school"]],
    }
    active = _active_counts(states)
    per_school, per_entity = [active], [active.groupby(level="entity").sum()]
    for name, frame in frames.items():
        frame = frame.fillna("")
        per_school.append(frame.groupby(["entity", "school"]).size().rename(name))
        per_entity.append(frame.groupby("entity").size().rename(name))
    schools = pd.concat(per_school, axis=1).fillna(0).astype("int64").reset_index()
    schools = schools[schools["school"].ne("")]
    entities = pd.concat(per_entity, axis=1).reindex(list(ENTITIES)).fillna(0).astype("int64").reset_index(names="entity")
    entities.insert(1, "school", "")
    return pd.concat([entities, schools], ignore_index=True)


def _sample(changes: pd.DataFrame, entity: str, school: str, op: str) -> tuple[str, ...]:
    hit = changes[changes["entity"].eq(entity) & changes["op"].eq(op)]
    if school:
        hit = hit[hit["school"].eq(school)]
    return tuple(hit.sort_values("seq")["sourcedId"].head(SAMPLE_SIZE).astype(str))


def evaluate(changes: pd.DataFrame, states: Mapping[str, pd.DataFrame], policy: SafetyPolicy = DEFAULT_POLICY) -> SafetyVerdict:
    """Judge a change set (columns seq, entity, op, sourcedId, school, natural_key) against the sync
    states per entity (sourcedId, active, school) under `policy`."""
    changes = changes.assign(school=changes["school"].fillna("").astype(str), natural_key=changes["natural_key"].fillna(""))
    churned = _churned(changes)
    table = _scope_counts(changes, states, churned)
    holds: list[Hold] = []
    for row in table.itertuples(index=False):
        if row.active_before == 0 or (row.school and row.active_before < policy.min_school_size):
            continue
        for kind, count, limit, op in (
            (DEACTIVATION, row.deactivate, policy.max_deactivated_share, "deactivate"),
            (UPDATE, row.update, policy.max_updated_share, "update"),
        ):
            share = count / row.active_before
            if share > limit:
                holds.append(Hold(kind, row.entity, row.school, int(count), int(row.active_before), share, limit, _sample(changes, row.entity, row.school, op)))
        churn_share = row.id_churn / row.active_before
        if not row.school and churn_share > policy.max_id_churn:
            pairs = churned[churned["entity"].eq(row.entity)].sort_values("seq").head(SAMPLE_SIZE)
            sample = tuple(f"{old}->{new}" for old, new in zip(pairs["sourcedId"], pairs["new_sourcedId"]))
            holds.append(Hold(ID_CHURN, row.entity, "", int(row.id_churn), int(row.active_before), churn_share, policy.max_id_churn, sample))
    counts = tuple(
        ScopeCounts(r.entity, r.school, int(r.active_before), int(r.create), int(r.update), int(r.reactivate), int(r.deactivate), int(r.id_churn))
        for r in table.itertuples(index=False)
    )
    order = {kind: i for i, kind in enumerate(HOLD_KINDS)}
    holds.sort(key=lambda h: (order[h.kind], ENTITIES.index(h.entity), h.school))
    return SafetyVerdict(holds=tuple(holds), counts=counts)
