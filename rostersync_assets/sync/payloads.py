"""What the LMS receives for a OneRoster row, and the content hash that decides whether it changed.

The hash covers exactly the fields sent, so a change the LMS would not see (a password, the
bookkeeping columns status/dateLastModified, our `_line` column) never causes a write. Hashing is
column-wise over a whole table (one string join per row, then sha256) because it runs on every row
of every nightly delivery; the JSON record is built only for rows that actually travel.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import pandas as pd

from rostersync_assets.oneroster.spec import NEVER_SENT_COLUMNS, SPECS

# Columns the LMS never receives: lifecycle bookkeeping and secrets.
_NOT_PAYLOAD = frozenset({"status", "dateLastModified"}) | NEVER_SENT_COLUMNS
_SEPARATOR = "\x1f"  # ASCII unit separator: not a character of any OneRoster value


def payload_columns(entity: str) -> list[str]:
    """The spec columns of `entity` that travel to the LMS, in spec order."""
    return [c for c in SPECS[entity].columns if c not in _NOT_PAYLOAD]


def lms_record(row: Mapping[str, object], entity: str) -> dict[str, str]:
    """The LMS record of one OneRoster row: its payload columns, blanks kept as ""."""
    return {column: str(row.get(column, "") or "") for column in payload_columns(entity)}


def _digest(joined: str) -> str:
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def content_hash(record: Mapping[str, object], entity: str) -> str:
    """sha256 of a record's payload values in spec order (equal to `table_hashes` for its row)."""
    return _digest(_SEPARATOR.join(lms_record(record, entity).values()))


def _payload_values(table: pd.DataFrame, entity: str) -> pd.DataFrame:
    return table[payload_columns(entity)].fillna("").astype(str)


def table_hashes(table: pd.DataFrame, entity: str) -> pd.DataFrame:
    """sourcedId, source line and content hash of every row of a validated table."""
    if table.empty:
        return pd.DataFrame({"sourcedId": pd.Series(dtype=str), "line": pd.Series(dtype="int64"), "content_hash": pd.Series(dtype=str)})
    values = _payload_values(table, entity)
    first, *rest = values.columns
    joined = values[first].str.cat([values[c] for c in rest], sep=_SEPARATOR) if rest else values[first]
    lines = table["_line"].astype("int64") if "_line" in table.columns else pd.Series(0, index=table.index)
    return pd.DataFrame(
        {
            "sourcedId": table["sourcedId"].astype(str).to_numpy(),
            "line": lines.to_numpy(),
            "content_hash": [_digest(j) for j in joined],
        }
    )


def records_json(table: pd.DataFrame, entity: str) -> list[str]:
    """The canonical JSON LMS record of each row (built only for rows that travel)."""
    values = _payload_values(table, entity)
    columns = list(values.columns)
    return [
        json.dumps(dict(zip(columns, row)), separators=(",", ":"), ensure_ascii=False)
        for row in values.itertuples(index=False, name=None)
    ]
