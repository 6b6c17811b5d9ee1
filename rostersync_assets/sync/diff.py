"""The change set: what must travel to the LMS so it matches a district's latest delivery.

It compares each validated table with the sync state (what the LMS last acknowledged: sourcedId,
content hash, active, school, optionally the natural-key digest) and yields creates, updates,
reactivations and deactivations. Upserts are ordered parents first (orgs before the classes that name them),
deactivations children first. Manifest modes decide what an omission means: in `bulk` a missing
record is deactivated, in `delta` only rows marked `tobedeleted` are, and an `absent` file touches
nothing.

The comparison runs in DuckDB over the tables' Arrow buffers (no copy): one join per entity hashes
the delivered rows on every core and keeps only the rows that change, so 8 M enrollments against
8 M in the state never become a pandas merge (which took 45 CPU-s and 9.5 GB; DuckDB 8.5 CPU-s and
0.8 GB beside its inputs). The JSON record, school and natural-key digest are then built for the
travelling rows alone.

Memory (issue 4: 8 M enrollments under 3 GB with their inputs): the join's hash table alone took
0.65 GB, so DuckDB joins under `_JOIN_MIB_PER_THREAD` and spills the rest to a temporary folder
(peak 0.44 GB above the inputs instead of 0.77; +1.8 CPU-s on 8 M rows, the same at any smaller limit).
A sync state needs no natural-key digest per row (64 hex characters, 0.55 GB at 8 M rows): the
deactivations, the only state rows whose digest the change set carries, get theirs from a
`NaturalKeyLookup` (the ledger, by sourcedId) when the state has no `natural_key` column.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rostersync_assets.oneroster.frames import duckdb_connection
from rostersync_assets.oneroster.spec import ENTITIES, FILE_COLUMN, LINE_COLUMN
from rostersync_assets.sync.payloads import (
    arrow_text,
    content_hash_sql,
    natural_key_sql,
    record_json_sql,
    school_sql,
    text_columns,
)

DEACTIVATE_OP = "deactivate"
# Delta rows with one of these statuses remove the record (1.0's `inactive` means the same).
REMOVAL_STATUSES = frozenset({"tobedeleted", "inactive", "deleted"})

# `source_file` and `line` locate the delivered row a change comes from (for the ledger): the row's `_file`
# when its table was converted from several files (Clever), else `<entity>.csv`; line 0 for a record the
# delivery no longer holds.
CHANGE_COLUMNS = [
    "seq", "entity", "op", "sourcedId", "source_file", "line", "hash_before", "hash_after", "record", "school", "natural_key",
]
STATE_COLUMNS = ["sourcedId", "content_hash", "active", "school", "natural_key"]
# State columns the diff can do without: an absent school reads as "", an absent natural key comes
# from the NaturalKeyLookup (else "").
_OPTIONAL_STATE_COLUMNS = ("school", "natural_key")
_STRING_COLUMNS = [c for c in CHANGE_COLUMNS if c not in ("seq", "line")]
# What DuckDB may hold per thread during one entity's join before it spills (see the module docstring):
# 2 cores, 256 MB. Per thread because each thread of a spilling join needs its own buffers.
_JOIN_MIB_PER_THREAD = 128

# (entity, sourcedIds) -> natural-key digest per sourcedId; ids it does not know have none ("").
NaturalKeyLookup = Callable[[str, Sequence[str]], Mapping[str, str]]

# One row per delivered row that changes something and per state row a bulk file no longer holds.
# `rows` are the delivered rows (text_columns plus _position), `state` the sync state (plus _position).
# A delivered row is `gone` when its delta status removes it; a state row is gone when no delivered
# row names it (only the FULL JOIN of a bulk file yields such rows). Content hashes meet in the join
# as a fixed-width fingerprint (below), so its hash table holds no 64-character strings; the full
# hashes of the few changing rows are taken afterwards.
_COMPARE_SQL = """
WITH hashed AS (
    SELECT _position, "sourcedId", "{line}" AS line, {removed} AS removed,
           CASE WHEN {removed} THEN NULL ELSE {content_hash} END AS content_hash
    FROM rows
), delivered AS (
    SELECT _position, "sourcedId", line, removed, {fingerprint} AS fingerprint FROM hashed
), held AS (
    SELECT _position, "sourcedId", active, {fingerprint} AS fingerprint FROM state
), compared AS (
    SELECT d._position AS position, h._position AS state_position,
           coalesce(d."sourcedId", h."sourcedId") AS "sourcedId", coalesce(d.line, 0) AS line,
           h.active, d.fingerprint IS DISTINCT FROM h.fingerprint AS edited,
           d._position IS NULL OR d.removed AS gone
    FROM delivered d {join} held h ON d."sourcedId" = h."sourcedId"
)
SELECT position, state_position, "sourcedId", line,
       CASE WHEN gone THEN '{deactivate}' WHEN state_position IS NULL THEN 'create'
            WHEN NOT active THEN 'reactivate' ELSE 'update' END AS op
FROM compared
WHERE CASE WHEN gone THEN coalesce(active, false) ELSE state_position IS NULL OR NOT active OR edited END
"""


# The changed rows with what travels and what the ledger keeps: upserts (delivery order) take hash,
# record, school and natural key from the delivered row, deactivations (sync-state order) take hash,
# school and natural key from the state. Only the changed rows are looked up and built.
_DETAILS_SQL = """
WITH travelling AS (
    SELECT _position, {content_hash} AS hash_after, {record} AS record, {school} AS school,
           {natural_key} AS natural_key, {source_file} AS source_file
    FROM rows WHERE _position IN (SELECT position FROM changed)
)
SELECT c.op, c."sourcedId", coalesce(t.source_file, '{entity_file}') AS source_file, c.line,
       coalesce(s.content_hash, '') AS hash_before,
       coalesce(t.hash_after, '') AS hash_after, coalesce(t.record, '') AS record,
       coalesce(t.school, {state_school}, '') AS school, coalesce(t.natural_key, {state_natural_key}, '') AS natural_key
FROM changed c
LEFT JOIN travelling t ON t._position = c.position
LEFT JOIN state s ON s._position = c.state_position
ORDER BY c.position IS NULL, c.position, c.state_position
"""


# A content hash as one 128-bit number: DuckDB's 64-bit hash of the whole hex digest beside a hash of
# its first 12 hex digits (NULL stays NULL). A wrong "unchanged" would need both a 64-bit hash
# collision and 48 equal digest bits. Both sides are computed in the same query, so DuckDB's hash
# need not be stable across versions, and neither parses hex nor copies long strings (cheap on 8 M rows).
_FINGERPRINT_SQL = (
    "CASE WHEN content_hash IS NULL THEN NULL"
    " ELSE (hash(content_hash)::UHUGEINT << 64) | hash(left(content_hash, 12)) END"
)


def empty_state() -> pd.DataFrame:
    """A sync state with no records: a district's first sync creates everything."""
    frame = pd.DataFrame({c: pd.Series(dtype=str) for c in STATE_COLUMNS})
    return frame.astype({"active": bool})


def empty_changes() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=str) for c in CHANGE_COLUMNS})
    return frame.astype({"seq": "int64", "line": "int64"})


def _state_table(state: pd.DataFrame) -> pa.Table:
    """The sync state as Arrow with its row positions; optional columns only when the state has them."""
    columns: dict[str, pa.ChunkedArray | pa.Array] = {"_position": pa.array(np.arange(len(state), dtype=np.int64))}
    for column in ("sourcedId", "content_hash", *_OPTIONAL_STATE_COLUMNS):
        if column in state.columns:
            columns[column] = arrow_text(state[column])
    columns["active"] = pa.array(state["active"].fillna(False).to_numpy(dtype=bool))
    return pa.table(columns)


def _state_value_sql(state: pd.DataFrame, column: str) -> str:
    """SQL for an optional state column in the details query: the column, or NULL when absent."""
    return f"s.{column}" if column in state.columns else "NULL"


def _with_natural_keys(deactivations: pd.DataFrame, entity: str, natural_keys: NaturalKeyLookup) -> pd.DataFrame:
    """Deactivations with the natural-key digests `natural_keys` holds for their sourcedIds."""
    found = natural_keys(entity, deactivations["sourcedId"].tolist())
    return deactivations.assign(natural_key=deactivations["sourcedId"].map(found).fillna("").astype("str"))


def _removed_sql(mode: str) -> str:
    """Whether a delivered row removes its record: only a delta row's status can."""
    if mode != "delta":
        return "false"
    statuses = ", ".join(f"'{s}'" for s in sorted(REMOVAL_STATUSES))
    return f"lower(trim(coalesce(\"status\", ''))) IN ({statuses})"


def _frame(entity: str, changes: pa.Table) -> pd.DataFrame:
    """Change-set rows without seq."""
    frame = pd.DataFrame({"entity": pd.Series(entity, index=pd.RangeIndex(changes.num_rows), dtype="str")})
    for column in CHANGE_COLUMNS[2:]:
        frame[column] = changes[column].to_pandas()
    return frame.astype({"line": "int64"})


def diff_entity(
    entity: str, table: pd.DataFrame, mode: str, state: pd.DataFrame, natural_keys: NaturalKeyLookup | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(upserts, deactivations) for one entity; both empty when the file is absent.

    `natural_keys` gives the deactivations their digests when `state` has no natural_key column.
    """
    if mode == "absent" or (table.empty and mode != "bulk"):
        return empty_changes().drop(columns="seq"), empty_changes().drop(columns="seq")
    rows = text_columns(table, entity)
    rows = rows.append_column("_position", pa.array(np.arange(rows.num_rows, dtype=np.int64)))
    compare = _COMPARE_SQL.format(
        line=LINE_COLUMN,
        removed=_removed_sql(mode),
        content_hash=content_hash_sql(entity),
        fingerprint=_FINGERPRINT_SQL,
        join="LEFT JOIN" if mode == "delta" else "FULL OUTER JOIN",
        deactivate=DEACTIVATE_OP,
    )
    details = _DETAILS_SQL.format(
        content_hash=content_hash_sql(entity),
        record=record_json_sql(entity),
        school=school_sql(entity),
        natural_key=natural_key_sql(entity),
        state_school=_state_value_sql(state, "school"),
        state_natural_key=_state_value_sql(state, "natural_key"),
        source_file=f'"{FILE_COLUMN}"' if FILE_COLUMN in table.columns else "NULL",
        entity_file=f"{entity}.csv",  # entity is one of ENTITIES: no quoting needed
    )
    # The folder outlives the connection (exits run in reverse): DuckDB drops its spill files on close.
    with tempfile.TemporaryDirectory(prefix="rostersync-diff-") as spill, duckdb_connection() as con:
        folder = spill.replace("'", "''")
        con.execute(f"SET temp_directory = '{folder}'")
        [(threads,)] = con.sql("SELECT current_setting('threads')").fetchall()
        con.execute(f"SET memory_limit = '{_JOIN_MIB_PER_THREAD * int(threads)}MiB'")
        con.register("rows", rows)
        con.register("state", _state_table(state))
        con.register("changed", con.sql(compare).to_arrow_table())
        con.execute("RESET memory_limit")  # the details are few rows, except on a first sync: as before
        changes = con.sql(details).to_arrow_table()
    gone = pc.equal(changes["op"], DEACTIVATE_OP)
    deactivations = _frame(entity, changes.filter(gone))
    if natural_keys is not None and "natural_key" not in state.columns and not deactivations.empty:
        deactivations = _with_natural_keys(deactivations, entity, natural_keys)
    return _frame(entity, changes.filter(pc.invert(gone))), deactivations


def build_change_set(
    tables: Mapping[str, pd.DataFrame],
    modes: Mapping[str, str],
    states: Mapping[str, pd.DataFrame],
    natural_keys: NaturalKeyLookup | None = None,
) -> pd.DataFrame:
    """Every change of a delivery in apply order, numbered by `seq`.

    `natural_keys` looks up the digests of deactivated records whose state has no natural_key column
    (what `SyncLedger.load_state` returns; `SyncLedger.natural_keys` answers).
    """
    upserts, deactivations = [], []
    for entity in ENTITIES:
        ups, deacts = diff_entity(
            entity, tables.get(entity, pd.DataFrame()), modes.get(entity, "absent"), states.get(entity, empty_state()), natural_keys
        )
        upserts.append(ups)
        deactivations.insert(0, deacts)  # children first: enrollments before the classes they name
    frames = [f for f in upserts + deactivations if not f.empty]
    if not frames:
        return empty_changes()
    changes = pd.concat(frames, ignore_index=True)
    changes.insert(0, "seq", range(len(changes)))
    return changes.astype({"seq": "int64", "line": "int64"} | dict.fromkeys(_STRING_COLUMNS, "str"))[CHANGE_COLUMNS]
