"""Time the change-set diff on a large district: 8 M enrollments in the sync state against a delivery
with 1 % of them changed, 0.5 % added and 0.5 % removed (issue 4 target: under 10 s, peak RSS
under 3 GB on 2 cores).

The inputs are built in a child process and written to Parquet, then read back here the way the
`roster_changes` asset receives them (Parquet through the IO manager, strings in Arrow; the state as
`SyncLedger.load_state` returns it: school categorical, no natural-key digest), so what building them
costs never shows in this process's figures. The diff asks a SQLite ledger holding the same state for
the natural-key digests of the records it deactivates (`SyncLedger.natural_keys`), as in the pipeline.
Printed: reading the inputs, the whole `build_change_set` (its peak RSS includes the inputs it
holds), the content hashing of the delivered table on its own (`table_hashes`, which also
materialises the 8 M hashes, so an upper bound of the hashing inside the diff), the rest of the diff
by difference, CPU seconds (less disturbed than wall time on a shared machine), and the op counts
found against the generated ones. Run from the repository root:

    .venv/bin/python -m benchmarks.diff_enrollments --rows 8000000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sqlite3
import tempfile
from functools import partial
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks._measure import peak_rss_since_reset_mib, reset_peak_rss, timed
from rostersync_assets.connectors.ledger import SyncLedger
from rostersync_assets.oneroster.spec import LINE_COLUMN, SPECS
from rostersync_assets.sync.diff import build_change_set
from rostersync_assets.sync.payloads import natural_key_digests, record_schools, table_hashes

DISTRICT, ENTITY = "bench-district", "enrollments"
CHANGED, ADDED, REMOVED = 0.01, 0.005, 0.005
SCHOOLS = 40
CLASSES_PER_STUDENT = 6
SECTION_SIZE = 25


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Ids like `enr-00000042` (the generator's shapes), built in Arrow without Python strings."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.large_string()), width=width, padding="0")
    return pc.binary_join_element_wise(pa.scalar(prefix, pa.large_string()), digits, pa.scalar("", pa.large_string()))


def _enrollments(numbers: np.ndarray, end_date: pa.Array) -> pa.Table:
    """Enrollment rows for enrollment numbers: every student in 6 sections, a teacher per 26th row."""
    rows = len(numbers)
    classes = max(1, rows // SECTION_SIZE)
    class_number = (numbers * 7919) % classes
    teacher = pa.array(numbers % 26 == 0)
    blank = pa.repeat(pa.scalar("", pa.large_string()), rows)
    values = {
        "sourcedId": _ids("enr-", numbers, 8),
        "status": blank,
        "dateLastModified": blank,
        "classSourcedId": _ids("cls-", class_number, 7),
        "schoolSourcedId": _ids("org-", class_number % SCHOOLS + 1, 6),
        "userSourcedId": pc.if_else(teacher, _ids("tch-", class_number % 5000, 6), _ids("", numbers // CLASSES_PER_STUDENT, 7)),
        "role": pc.if_else(teacher, "teacher", "student"),
        "primary": pc.if_else(teacher, "true", "false"),
        "beginDate": pa.repeat(pa.scalar("2026-09-01", pa.large_string()), rows),
        "endDate": end_date,
    }
    return pa.table({column: values[column] for column in SPECS[ENTITY].columns})


def _with_lines(table: pa.Table) -> pa.Table:
    return table.append_column(LINE_COLUMN, pa.array(np.arange(2, table.num_rows + 2, dtype=np.int64)))


def _write_ledger(path: Path, state: pd.DataFrame, natural_keys: pd.Series) -> None:
    """The state with its natural-key digests as sync-state rows of a SQLite ledger."""
    SyncLedger(path).close()  # creates the tables
    insert = (
        "INSERT INTO sync_state (district, entity, sourced_id, content_hash, active, delivery_id, updated_at, school, natural_key)"
        " VALUES (?, ?, ?, ?, 1, 'd0', '', ?, ?)"
    )
    with sqlite3.connect(path) as conn:
        for start in range(0, len(state), 500_000):
            part = slice(start, start + 500_000)
            columns = (state["sourcedId"][part], state["content_hash"][part], state["school"][part].astype(str), natural_keys[part])
            conn.executemany(insert, zip(repeat(DISTRICT), repeat(ENTITY), *columns))


def _write_inputs(folder: Path, rows: int, seed: int) -> None:
    """Yesterday's acknowledged state and today's delivery as Parquet, and the ops they must produce."""
    rng = np.random.default_rng(seed)
    numbers = np.arange(1, rows + 1, dtype=np.int64)
    yesterday = _with_lines(_enrollments(numbers, pa.repeat(pa.scalar("2027-06-30", pa.large_string()), rows)))
    picked = rng.permutation(rows)
    removed, changed = picked[: int(rows * REMOVED)], picked[int(rows * REMOVED) : int(rows * (REMOVED + CHANGED))]
    frame = yesterday.to_pandas()
    state = pd.DataFrame(
        {
            "sourcedId": frame["sourcedId"],
            "content_hash": table_hashes(frame, ENTITY)["content_hash"].to_numpy(),
            "active": True,
            "school": record_schools(frame, ENTITY).astype("category"),
        }
    )
    state.to_parquet(folder / "state.parquet", index=False)
    _write_ledger(folder / "ledger.db", state, natural_key_digests(frame, ENTITY))
    del frame, state
    edited = np.zeros(rows, dtype=bool)
    edited[changed] = True
    kept = np.ones(rows, dtype=bool)
    kept[removed] = False
    today = yesterday.drop_columns([LINE_COLUMN]).set_column(
        SPECS[ENTITY].columns.index("endDate"), "endDate", pc.if_else(pa.array(edited), "2027-01-29", yesterday["endDate"])
    ).filter(pa.array(kept))
    added = int(rows * ADDED)
    new_numbers = np.arange(rows + 1, rows + added + 1, dtype=np.int64)
    new_rows = _enrollments(new_numbers, pa.repeat(pa.scalar("2027-06-30", pa.large_string()), added))
    pq.write_table(_with_lines(pa.concat_tables([today, new_rows])), folder / "delivery.parquet")
    expected = {"create": added, "update": len(changed), "reactivate": 0, "deactivate": len(removed)}
    (folder / "expected.json").write_text(json.dumps(expected))


def _cpu_seconds() -> float:
    """CPU time of this process over all its threads: less disturbed than wall time on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8_000_000, help="enrollments in the sync state")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rostersync-diff-bench-") as tmp:
        folder = Path(tmp)
        builder = multiprocessing.get_context("spawn").Process(target=_write_inputs, args=(folder, args.rows, args.seed))
        builder.start()
        builder.join()
        if builder.exitcode != 0:
            raise SystemExit(f"building the inputs failed (exit code {builder.exitcode})")
        expected = json.loads((folder / "expected.json").read_text())
        with timed("read inputs (Parquet)", results):
            delivery = pd.read_parquet(folder / "delivery.parquet")
            state = pd.read_parquet(folder / "state.parquet")
        pa.default_memory_pool().release_unused()  # the reader's scratch buffers are not the inputs
        reset_peak_rss()
        held = peak_rss_since_reset_mib()
        print(f"state {len(state):,} enrollments, delivery {len(delivery):,} rows; RSS holding them: {held:,.0f} MiB", flush=True)
        started = _cpu_seconds()
        with timed("total: build_change_set", results), SyncLedger(folder / "ledger.db") as ledger:
            changes = build_change_set({ENTITY: delivery}, {ENTITY: "bulk"}, {ENTITY: state}, partial(ledger.natural_keys, DISTRICT))
        diff_peak, diff_cpu = peak_rss_since_reset_mib(), _cpu_seconds() - started
    started = _cpu_seconds()
    with timed("hashing alone: table_hashes", results):
        table_hashes(delivery, ENTITY)
    hashing_cpu = _cpu_seconds() - started
    found = changes["op"].value_counts().to_dict()
    total, hashing = results["total: build_change_set"], results["hashing alone: table_hashes"]
    print(f"seconds: hashing {hashing:.2f}, diff {total - hashing:.2f}, total {total:.2f}")
    print(f"CPU seconds (all threads): hashing {hashing_cpu:.2f}, total {diff_cpu:.2f}")
    print(f"peak RSS during build_change_set: {diff_peak:,.0f} MiB (inputs included; {diff_peak - held:,.0f} MiB above them)")
    for op, count in expected.items():
        print(f"{op:<11} found {int(found.get(op, 0)):>9,}   expected {count:>9,}")
    keyed = changes["op"].eq("deactivate") & changes["natural_key"].ne("")
    print(f"deactivations with their natural key: {int(keyed.sum()):,} of {int(found.get('deactivate', 0)):,}")


if __name__ == "__main__":
    main()
