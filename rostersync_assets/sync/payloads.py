"""What the LMS receives for a OneRoster row, its content hash, its school and its natural key.

The hash covers exactly the fields sent, so a change the LMS would not see (a password, the
bookkeeping columns status/dateLastModified, our `_line` column) never causes a write. Every rule
exists twice, in one place each: per record in Python (`content_hash`, for single records such as
the LMS's own list) and as a DuckDB SQL expression over a whole table (`content_hash_sql`, ...), so
the diff can evaluate it inside its join on 8 M rows on every core, and build the JSON record, the
school and the natural-key digest only for the rows that travel. A test holds the two forms equal.

The natural key is what identifies a record apart from its sourcedId (username + orgs, classCode +
school + terms, ...); the change set carries only its sha256 digest, because the key may hold a
username. A key with an empty part (a class without classCode) identifies nothing, so it is "".
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from rostersync_assets.oneroster.frames import duckdb_connection
from rostersync_assets.oneroster.spec import FILE_COLUMN, LINE_COLUMN, NEVER_SENT_COLUMNS, SPECS

# Columns the LMS never receives: lifecycle bookkeeping and secrets.
_NOT_PAYLOAD = frozenset({"status", "dateLastModified"}) | NEVER_SENT_COLUMNS
_SEPARATOR = "\x1f"  # ASCII unit separator: not a character of any OneRoster value
_LIST_SEPARATOR = ","  # between the items of a list column (orgSourcedIds, termSourcedIds)


def payload_columns(entity: str) -> list[str]:
    """The spec columns of `entity` that travel to the LMS, in spec order."""
    return [c for c in SPECS[entity].columns if c not in _NOT_PAYLOAD]


def lms_record(row: Mapping[str, object], entity: str) -> dict[str, str]:
    """The LMS record of one OneRoster row: its payload columns, blanks kept as ""."""
    return {column: str(row.get(column, "") or "") for column in payload_columns(entity)}


def content_hash(record: Mapping[str, object], entity: str) -> str:
    """sha256 of a record's payload values in spec order (equal to `table_hashes` for its row)."""
    return hashlib.sha256(_SEPARATOR.join(lms_record(record, entity).values()).encode("utf-8")).hexdigest()


# --- the same rules as DuckDB SQL over a table of `text_columns` ---------------------------------


def _text(column: str) -> str:
    """A column's value with a blank (null) read as "", as `lms_record` reads it."""
    return f"coalesce(\"{column}\", '')"


def _sha256_of(parts: tuple[str, ...] | list[str]) -> str:
    return f"sha256(concat_ws(chr({ord(_SEPARATOR)}), {', '.join(parts)}))"


def _sorted_items(column: str) -> str:
    """A list column's items, trimmed, blanks dropped, sorted (an SIS may reorder them nightly)."""
    items = f"list_transform(string_split({_text(column)}, '{_LIST_SEPARATOR}'), lambda item: trim(item))"
    return f"array_to_string(list_sort(list_filter({items}, lambda item: item <> '')), '{_LIST_SEPARATOR}')"


# The school (org sourcedId) a record belongs to; entities not listed belong to none ("").
# Academic sessions are district-wide in OneRoster 1.1 (their file names no org).
_SCHOOL_SQL: dict[str, str] = {
    "orgs": f"CASE WHEN {_text('type')} = 'school' THEN {_text('sourcedId')} ELSE '' END",
    "courses": _text("orgSourcedId"),
    "classes": _text("schoolSourcedId"),
    "users": f"trim(split_part({_text('orgSourcedIds')}, '{_LIST_SEPARATOR}', 1))",
    "enrollments": _text("schoolSourcedId"),
}

# The parts of each entity's natural key, in order; entities not listed have none.
_NATURAL_KEY_PARTS: dict[str, tuple[str, ...]] = {
    "orgs": (_text("identifier"),),
    "academicSessions": (_text("title"), _text("type"), _text("schoolYear"), _text("startDate")),
    "courses": (_text("courseCode"), _text("orgSourcedId")),
    "classes": (_text("classCode"), _text("schoolSourcedId"), _sorted_items("termSourcedIds")),
    "users": (_text("username"), _sorted_items("orgSourcedIds")),
    "enrollments": (_text("userSourcedId"), _text("classSourcedId"), _text("role")),
}


def content_hash_sql(entity: str) -> str:
    """SQL for a row's content hash (the same sha256 as `content_hash`)."""
    return _sha256_of([_text(c) for c in payload_columns(entity)])


def record_json_sql(entity: str) -> str:
    """SQL for a row's LMS record as compact JSON, keys in spec order (what `lms_record` gives)."""
    fields = ", ".join(f'"{c}" := {_text(c)}' for c in payload_columns(entity))
    return f"CAST(to_json(struct_pack({fields})) AS VARCHAR)"


def school_sql(entity: str) -> str:
    """SQL for the sourcedId of the school a row belongs to, "" when none."""
    return _SCHOOL_SQL.get(entity, "''")


def natural_key_sql(entity: str) -> str:
    """SQL for the hex sha256 of a row's natural key, "" when the entity has none or a part is empty."""
    parts = _NATURAL_KEY_PARTS.get(entity)
    if parts is None:
        return "''"
    return f"CASE WHEN list_contains([{', '.join(parts)}], '') THEN '' ELSE {_sha256_of(parts)} END"


def arrow_text(values: pd.Series) -> pa.ChunkedArray:
    """A column as Arrow text; `str` columns (what the reader produces) are passed without a copy.

    A categorical of text (the sync state's school) stays an Arrow dictionary: DuckDB reads it as text,
    and its 8 M codes never become 8 M strings.
    """
    categorical = isinstance(values.dtype, pd.CategoricalDtype) and isinstance(values.dtype.categories.dtype, pd.StringDtype)
    if not isinstance(values.dtype, pd.StringDtype) and not categorical:
        values = values.fillna("").astype(str)
    array = pa.chunked_array(pa.Table.from_pandas(values.to_frame("v"), preserve_index=False).column(0))
    text = array.type.value_type if categorical else array.type
    return array if pa.types.is_large_string(text) or pa.types.is_string(text) else array.cast(pa.large_string())


def text_columns(table: pd.DataFrame, entity: str) -> pa.Table:
    """The columns the SQL rules read, as Arrow: every spec column but secrets, `_line` (0 if absent)
    and `_file` when the table has it (tables converted from another format name each row's file).

    A spec column the table lacks is blank, as `lms_record` reads a missing key.
    """
    rows = len(table)
    columns: dict[str, pa.ChunkedArray | pa.Array] = {
        column: arrow_text(table[column]) if column in table.columns else pa.nulls(rows, pa.large_string())
        for column in SPECS[entity].columns
        if column not in NEVER_SENT_COLUMNS
    }
    lines = table[LINE_COLUMN].to_numpy(dtype=np.int64) if LINE_COLUMN in table.columns else np.zeros(rows, dtype=np.int64)
    columns[LINE_COLUMN] = pa.array(lines)
    if FILE_COLUMN in table.columns:
        columns[FILE_COLUMN] = arrow_text(table[FILE_COLUMN])
    return pa.table(columns)


def _evaluate(table: pd.DataFrame, entity: str, expressions: Mapping[str, str]) -> pa.Table:
    """Evaluate SQL `expressions` on every row of `table`, in row order."""
    with duckdb_connection() as con:
        con.register("source_rows", text_columns(table, entity))
        select = ", ".join(f'{sql} AS "{name}"' for name, sql in expressions.items())
        return con.sql(f"SELECT {select} FROM source_rows").to_arrow_table()


def _series(values: pa.ChunkedArray, index: pd.Index) -> pd.Series:
    return pd.Series(values.to_pandas().array, index=index, dtype="str")


def table_hashes(table: pd.DataFrame, entity: str) -> pd.DataFrame:
    """sourcedId, source line and content hash of every row of a validated table."""
    hashed = _evaluate(table, entity, {"sourcedId": _text("sourcedId"), "line": f'"{LINE_COLUMN}"', "content_hash": content_hash_sql(entity)})
    return pd.DataFrame(
        {
            "sourcedId": _series(hashed["sourcedId"], pd.RangeIndex(len(table))),
            "line": hashed["line"].to_numpy(),
            "content_hash": _series(hashed["content_hash"], pd.RangeIndex(len(table))),
        }
    )


def records_json(table: pd.DataFrame, entity: str) -> list[str]:
    """The canonical JSON LMS record of each row (built only for rows that travel)."""
    return _evaluate(table, entity, {"record": record_json_sql(entity)})["record"].to_pylist()


def record_schools(table: pd.DataFrame, entity: str) -> pd.Series:
    """The school (org sourcedId) each row belongs to, "" when none; indexed like `table`."""
    return _series(_evaluate(table, entity, {"school": school_sql(entity)})["school"], table.index)


def natural_key_digests(table: pd.DataFrame, entity: str) -> pd.Series:
    """The hex sha256 of each row's natural key, "" when it has none; indexed like `table`."""
    return _series(_evaluate(table, entity, {"natural_key": natural_key_sql(entity)})["natural_key"], table.index)
