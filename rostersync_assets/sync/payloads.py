"""What the LMS receives for a OneRoster row, and the content hash that decides whether it changed.

The hash covers exactly the fields sent, so a change the LMS would not see (a password, the
bookkeeping columns status/dateLastModified, our `_line` column) never causes a write.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import pandas as pd

from rostersync_assets.oneroster.spec import NEVER_SENT_COLUMNS, SPECS

# Columns the LMS never receives: lifecycle bookkeeping and secrets.
_NOT_PAYLOAD = frozenset({"status", "dateLastModified"}) | NEVER_SENT_COLUMNS


def payload_columns(entity: str) -> list[str]:
    """The spec columns of `entity` that travel to the LMS, in spec order."""
    return [c for c in SPECS[entity].columns if c not in _NOT_PAYLOAD]


def lms_record(row: Mapping[str, str], entity: str) -> dict[str, str]:
    """The LMS record of one OneRoster row: its payload columns, blanks kept as ""."""
    return {column: str(row.get(column, "") or "") for column in payload_columns(entity)}


def _canonical(record: Mapping[str, str]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(record: Mapping[str, str]) -> str:
    """sha256 of the canonical JSON of an LMS record."""
    return hashlib.sha256(_canonical(record).encode("utf-8")).hexdigest()


def table_payloads(table: pd.DataFrame, entity: str) -> pd.DataFrame:
    """sourcedId, source line, canonical record JSON and content hash for every row of a table.

    Vectorised over columns where it can be: the JSON of each row is assembled once and hashed once.
    """
    columns = payload_columns(entity)
    if table.empty:
        return pd.DataFrame({"sourcedId": [], "line": [], "record": [], "content_hash": []}).astype(
            {"sourcedId": str, "line": "int64", "record": str, "content_hash": str}
        )
    values = table[columns].fillna("").astype(str)
    records = [_canonical(dict(zip(columns, row))) for row in values.itertuples(index=False, name=None)]
    hashes = [hashlib.sha256(r.encode("utf-8")).hexdigest() for r in records]
    lines = table["_line"].astype("int64") if "_line" in table.columns else pd.Series(0, index=table.index)
    return pd.DataFrame(
        {
            "sourcedId": table["sourcedId"].astype(str).to_numpy(),
            "line": lines.to_numpy(),
            "record": records,
            "content_hash": hashes,
        }
    )
