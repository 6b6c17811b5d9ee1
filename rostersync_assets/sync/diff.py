"""The change set: what must travel to the LMS so it matches a district's latest delivery.

It compares each validated table with the sync state (what the LMS last acknowledged: sourcedId,
content hash, active) and yields creates, updates, reactivations and deactivations. Upserts are
ordered parents first (orgs before the classes that name them), deactivations children first.
Manifest modes decide what an omission means: in `bulk` a missing record is deactivated, in
`delta` only rows marked `tobedeleted` are, and an `absent` file touches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from rostersync_assets.oneroster.frames import is_in
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.sync.payloads import records_json, table_hashes

UPSERT_OPS = ("create", "update", "reactivate")
DEACTIVATE_OP = "deactivate"
# Delta rows with one of these statuses remove the record (1.0's `inactive` means the same).
REMOVAL_STATUSES = frozenset({"tobedeleted", "inactive", "deleted"})

CHANGE_COLUMNS = ["seq", "entity", "op", "sourcedId", "line", "hash_before", "hash_after", "record"]
STATE_COLUMNS = ["sourcedId", "content_hash", "active"]


def empty_state() -> pd.DataFrame:
    """A sync state with no records: a district's first sync creates everything."""
    return pd.DataFrame({"sourcedId": pd.Series(dtype=str), "content_hash": pd.Series(dtype=str), "active": pd.Series(dtype=bool)})


def empty_changes() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=str) for c in CHANGE_COLUMNS})
    return frame.astype({"seq": "int64", "line": "int64"})


def _upserts(entity: str, table: pd.DataFrame, state: pd.DataFrame) -> pd.DataFrame:
    incoming = table_hashes(table, entity)
    incoming["position"] = range(len(incoming))
    merged = incoming.merge(state, on="sourcedId", how="left", suffixes=("", "_before"), indicator=True)
    known = merged["_merge"] == "both"
    active_before = merged["active"].fillna(False).astype(bool)
    op = pd.Series(pd.NA, index=merged.index, dtype="string")
    op[~known] = "create"
    op[known & ~active_before] = "reactivate"
    op[known & active_before & (merged["content_hash"] != merged["content_hash_before"])] = "update"
    changed = merged[op.notna()]
    return pd.DataFrame(
        {
            "entity": entity,
            "op": op[op.notna()].astype(str).to_numpy(),
            "sourcedId": changed["sourcedId"].to_numpy(),
            "line": changed["line"].to_numpy(),
            "hash_before": changed["content_hash_before"].fillna("").to_numpy(),
            "hash_after": changed["content_hash"].to_numpy(),
            "record": records_json(table.iloc[changed["position"].to_numpy()], entity),
        }
    )


def _deactivations(entity: str, sourced_ids: pd.Series, lines: pd.Series, state: pd.DataFrame) -> pd.DataFrame:
    active = state[state["active"].astype(bool)]
    targets = pd.DataFrame({"sourcedId": sourced_ids.to_numpy(), "line": lines.to_numpy()})
    hit = active.merge(targets, on="sourcedId", how="inner")
    return pd.DataFrame(
        {
            "entity": entity,
            "op": DEACTIVATE_OP,
            "sourcedId": hit["sourcedId"].to_numpy(),
            "line": hit["line"].astype("int64").to_numpy(),
            "hash_before": hit["content_hash"].to_numpy(),
            "hash_after": "",
            "record": "",
        }
    )


def diff_entity(entity: str, table: pd.DataFrame, mode: str, state: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(upserts, deactivations) for one entity; both empty when the file is absent."""
    if mode == "absent" or (table.empty and mode != "bulk"):
        return empty_changes().drop(columns="seq"), empty_changes().drop(columns="seq")
    if mode == "delta":
        status = table["status"].fillna("").str.strip().str.lower()
        removed = status.isin(REMOVAL_STATUSES)
        upserts = _upserts(entity, table[~removed], state)
        lines = table.loc[removed, "_line"] if "_line" in table.columns else pd.Series(0, index=table.index[removed])
        return upserts, _deactivations(entity, table.loc[removed, "sourcedId"], lines, state)
    upserts = _upserts(entity, table, state)
    gone = state.loc[~is_in(state["sourcedId"], table["sourcedId"]), "sourcedId"]
    return upserts, _deactivations(entity, gone, pd.Series(0, index=gone.index), state)


def build_change_set(
    tables: Mapping[str, pd.DataFrame], modes: Mapping[str, str], states: Mapping[str, pd.DataFrame]
) -> pd.DataFrame:
    """Every change of a delivery in apply order, numbered by `seq`."""
    upserts, deactivations = [], []
    for entity in ENTITIES:
        ups, deacts = diff_entity(
            entity, tables.get(entity, pd.DataFrame()), modes.get(entity, "absent"), states.get(entity, empty_state())
        )
        upserts.append(ups)
        deactivations.insert(0, deacts)  # children first: enrollments before the classes they name
    frames = [f for f in upserts + deactivations if not f.empty]
    if not frames:
        return empty_changes()
    changes = pd.concat(frames, ignore_index=True)
    changes.insert(0, "seq", range(len(changes)))
    return changes.astype({"seq": "int64", "line": "int64"})[CHANGE_COLUMNS]


@dataclass(frozen=True)
class EntityChangeCounts:
    """How many records of one entity each kind of change touches, and how many were active before."""

    entity: str
    create: int
    update: int
    reactivate: int
    deactivate: int
    active_before: int

    @property
    def deactivated_share(self) -> float:
        return self.deactivate / self.active_before if self.active_before else 0.0


def change_counts(changes: pd.DataFrame, states: Mapping[str, pd.DataFrame]) -> list[EntityChangeCounts]:
    """Per-entity counts for metadata, summaries and the safety check."""
    counts = changes.groupby(["entity", "op"]).size() if not changes.empty else pd.Series(dtype="int64")
    result = []
    for entity in ENTITIES:
        state = states.get(entity, empty_state())
        per_op = {op: int(counts.get((entity, op), 0)) for op in (*UPSERT_OPS, DEACTIVATE_OP)}
        result.append(
            EntityChangeCounts(
                entity=entity,
                create=per_op["create"],
                update=per_op["update"],
                reactivate=per_op["reactivate"],
                deactivate=per_op[DEACTIVATE_OP],
                active_before=int(state["active"].astype(bool).sum()),
            )
        )
    return result
