"""Time loading a large sync state (what `roster_changes` reads every night) from the ledger.

A district with 8 M enrollments has an 8 M-row state; the diff needs it as a DataFrame. The state
is filled by SQL inside the database (fast, realistic sizes: 36-character ids, 64-hex hashes), then
`SyncLedger.load_state` is timed. Run from the repository root, on the default SQLite file or on a
server given by URL (e.g. a throwaway PostgreSQL cluster):

    .venv/bin/python -m benchmarks.ledger_state --rows 8000000
    .venv/bin/python -m benchmarks.ledger_state --rows 8000000 --url postgresql://postgres@127.0.0.1:5433/bench
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import sqlalchemy as sa

from benchmarks._measure import peak_rss_since_reset_mib, reset_peak_rss, timed
from rostersync_assets.connectors.ledger import SyncLedger, masked

DISTRICT, ENTITY = "bench-district", "enrollments"

# Rows made by the database itself from a number n: ids like 'enr-00000042-…' (36 chars), sha256-like hashes.
_FILL = {
    "sqlite": """
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :rows)
        INSERT INTO sync_state (district, entity, sourced_id, content_hash, active, delivery_id, updated_at, school, natural_key)
        SELECT :district, :entity, printf('enr-%08d-0000-0000-0000-%012d', i, i), printf('%064x', i * 2654435761),
               i % 50 <> 0, 'd1', '2026-01-01T00:00:00+00:00', printf('school-%03d', i % 40), printf('%064x', i * 40503)
        FROM n
    """,
    "postgresql": """
        INSERT INTO sync_state (district, entity, sourced_id, content_hash, active, delivery_id, updated_at, school, natural_key)
        SELECT :district, :entity, format('enr-%s-0000-0000-0000-%s', lpad(i::text, 8, '0'), lpad(i::text, 12, '0')),
               md5(i::text) || md5((i + 1)::text), (i % 50 <> 0)::int, 'd1', '2026-01-01T00:00:00+00:00',
               'school-' || lpad((i % 40)::text, 3, '0'), md5((i * 7)::text) || md5((i * 11)::text)
        FROM generate_series(0, :rows - 1) AS i
    """,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8_000_000)
    parser.add_argument("--url", help="SQLAlchemy URL of an empty database (default: a temporary SQLite file)")
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as work:
        with SyncLedger(args.url or Path(work) / "ledger.db") as ledger:
            print(f"ledger {masked(ledger.url)}, {args.rows:,} state rows", flush=True)
            engine = sa.create_engine(ledger.url)
            with timed("fill the state (SQL)", results), engine.begin() as conn:
                conn.execute(sa.text(_FILL[engine.dialect.name]), {"rows": args.rows, "district": DISTRICT, "entity": ENTITY})
            engine.dispose()
            reset_peak_rss()
            with timed("load_state", results):
                state = ledger.load_state(DISTRICT, ENTITY)
            print(f"loaded {len(state):,} rows, frame {state.memory_usage(deep=True).sum() / 2**20:,.0f} MiB, "
                  f"peak RSS during load {peak_rss_since_reset_mib():,.0f} MiB", flush=True)
            assert len(state) == args.rows


if __name__ == "__main__":
    main()
