"""Time reading and validating a big district's delivery, file by file and as a whole, with peak RSS.

The target (issue 3) is what `rostersync validate` and the nightly asset pay for the largest
district we expect, 1,000,000 students, 60,000 teachers and 8,000,000 enrollments: every file read
and validated in under 20 s with peak RSS under 6 GB on 2 cores. The generator gives each student
8 classes (one per subject) and the benchmark then leaves out an evenly spread share of student
enrollments, so the counts are exact. Each file is first timed alone, as a one-file delivery (its
manifest declares the other files absent), so its reading and its schema and uniqueness checks,
and its peak memory, are attributed to it; then the whole package is read and validated as
production does, and the difference is what cross-file references cost. `--cprofile` adds a
profiled pass and prints where the time goes. Run from the repository root:

    .venv/bin/python -m benchmarks.validate_district [--students 1000000 --teachers 60000
        --enrollments 8000000] [--out DIR] [--cprofile]

With `--out DIR` an existing delivery in DIR is reused (else generated into it and kept); without
it the delivery is generated into a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import pstats
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks._measure import peak_rss_since_reset_mib, reset_peak_rss, timed
from rostersync_assets.oneroster import spec
from rostersync_assets.oneroster.reader import read_package
from rostersync_assets.oneroster.validate import validate_package
from rostersync_assets.sandbox.generator import SUBJECTS, DistrictRoster, generate_district, write_delivery

TARGET_SECONDS, TARGET_RSS_MIB = 20.0, 6 * 1024


@dataclass(frozen=True)
class Shape:
    """The district to generate: exact counts of students, teachers and enrollments."""

    students: int
    teachers: int
    enrollments: int
    seed: int
    # Rows in random order: many SIS exports are not sorted by sourcedId, and sorted ids let the
    # uniqueness check take its one-pass shortcut. Both orders are worth measuring.
    shuffled: bool = False


@contextmanager
def delivery_folder(out: Path | None, shape: Shape, results: dict[str, float]) -> Iterator[Path]:
    """The folder holding the delivery: `out` (kept), or a temporary folder removed afterwards."""
    if out is not None:
        yield _with_delivery(out, shape, results)
        return
    with tempfile.TemporaryDirectory(prefix="rostersync-validate-bench-") as temporary:
        yield _with_delivery(Path(temporary), shape, results)


def _with_delivery(folder: Path, shape: Shape, results: dict[str, float]) -> Path:
    """`folder`, after generating a delivery into it unless it already holds one."""
    if (folder / spec.MANIFEST_FILE).exists():
        print(f"reusing the delivery in {folder}", flush=True)
        return folder
    with timed(f"generate {shape.students:,} students", results):
        roster = generate_shape(shape)
    with timed("write delivery", results):
        write_delivery(roster, folder)
    return folder


def generate_shape(shape: Shape) -> DistrictRoster:
    """A generated district with exactly the shape's counts.

    Students get the fewest classes that reach the enrollment count (with the classes' teacher
    enrollments); the surplus student enrollments are left out evenly spread, so some students
    take one class fewer, as in a real district.
    """
    per_student = min(len(SUBJECTS), math.ceil(shape.enrollments / shape.students))
    roster = generate_district(
        students=shape.students, seed=shape.seed, teachers=shape.teachers, classes_per_student=per_student
    )
    enrollments = roster.tables["enrollments"]
    surplus = len(enrollments) - shape.enrollments
    if surplus < 0:
        raise SystemExit(f"{shape.students:,} students in at most {len(SUBJECTS)} classes each cannot make "
                         f"{shape.enrollments:,} enrollments")
    students = np.flatnonzero((enrollments["role"] == "student").to_numpy())
    left_out = students[np.linspace(0, len(students) - 1, surplus, dtype=np.int64)]
    keep = np.ones(len(enrollments), dtype=bool)
    keep[left_out] = False
    roster.tables["enrollments"] = enrollments[keep].reset_index(drop=True)
    if shape.shuffled:
        rng = np.random.default_rng(shape.seed)
        for name, table in roster.tables.items():
            roster.tables[name] = table.iloc[rng.permutation(len(table))].reset_index(drop=True)
    return roster


def one_file_delivery(files: dict[str, bytes], file_name: str) -> dict[str, bytes]:
    """The manifest with every other file declared absent, and that file: a valid delivery on its own."""
    declared = f"file.{spec.entity_of_file(file_name)}"
    rows = csv.reader(io.StringIO(files[spec.MANIFEST_FILE].decode("utf-8")))
    manifest = io.StringIO()
    csv.writer(manifest, lineterminator="\n").writerows(
        [name, "absent" if name.startswith("file.") and name != declared else value] for name, value in rows
    )
    return {spec.MANIFEST_FILE: manifest.getvalue().encode("utf-8"), file_name: files[file_name]}


def time_each_file(files: dict[str, bytes], results: dict[str, float]) -> dict[str, int]:
    """Read and validate every synced file alone; returns its row count."""
    rows = {}
    for file_spec in spec.SYNCED_FILES:
        name = file_spec.file_name
        alone = one_file_delivery(files, name)
        reset_peak_rss()
        with timed(f"read {name}", results):
            package = read_package(alone)
        with timed(f"validate {name}", results):
            validate_package(package)
        results[f"{name} peak MiB"] = peak_rss_since_reset_mib()
        rows[name] = len(package.tables.get(file_spec.entity, ()))
        del package
    return rows


def time_whole_package(files: dict[str, bytes], results: dict[str, float]) -> None:
    """Read and validate the delivery as production does; it must come out clean."""
    reset_peak_rss()
    with timed("read package (all files)", results):
        package = read_package(files)
    with timed("validate package (all files)", results):
        report = validate_package(package)
    results["package peak MiB"] = peak_rss_since_reset_mib()
    if not report.accepted or any(report.rejected_rows(entity) for entity in spec.ENTITIES):
        raise SystemExit("the generated delivery must validate cleanly; the benchmark would measure the wrong path")


def print_summary(files: dict[str, bytes], rows: dict[str, int], results: dict[str, float]) -> None:
    print("\nalone: each file as a one-file delivery (validate = its value rules and sourcedId uniqueness)")
    print("file                      rows       MiB    read s  validate s   peak RSS MiB")
    for file_spec in spec.SYNCED_FILES:
        name = file_spec.file_name
        print(
            f"{name:<20} {rows[name]:>10,} {len(files[name]) / 2**20:>9,.0f} {results[f'read {name}']:>9.2f}"
            f" {results[f'validate {name}']:>11.2f} {results[f'{name} peak MiB']:>14,.0f}"
        )
    alone = sum(seconds for label, seconds in results.items() if label.startswith("validate ") and ".csv" in label)
    read, validate = results["read package (all files)"], results["validate package (all files)"]
    print(f"\ncross-file checks (references, semantic rules: whole-package validate minus files alone): {validate - alone:.2f} s")
    # The whole package is the largest step; per-step peaks because resetting VmHWM may reset ru_maxrss too.
    total, peak = read + validate, max(value for label, value in results.items() if label.endswith(" peak MiB"))
    print(f"read + validate, whole package: {total:.2f} s (target {TARGET_SECONDS:.0f} s) "
          f"{'OK' if total < TARGET_SECONDS else 'OVER'}")
    print(f"peak RSS: {peak:,.0f} MiB (target {TARGET_RSS_MIB:,} MiB) {'OK' if peak < TARGET_RSS_MIB else 'OVER'}")


def print_profile(files: dict[str, bytes], top: int) -> None:
    """Where the time of reading and validating the whole package goes, by own time and by cumulative time."""
    profiler = cProfile.Profile()
    profiler.runcall(lambda: validate_package(read_package(files)))
    for order in ("tottime", "cumulative"):
        print(f"\ncProfile, top {top} by {order} (profiler overhead inflates the totals):", flush=True)
        pstats.Stats(profiler).strip_dirs().sort_stats(order).print_stats(top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=1_000_000)
    parser.add_argument("--teachers", type=int, default=60_000)
    parser.add_argument("--enrollments", type=int, default=8_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shuffle", action="store_true", help="write every file's rows in random order (ids unsorted)")
    parser.add_argument("--out", type=Path, help="delivery folder to reuse, or to generate into and keep")
    parser.add_argument("--cprofile", action="store_true", help="also profile one read + validate pass")
    parser.add_argument("--top", type=int, default=25, help="cProfile entries to print per ordering")
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    shape = Shape(args.students, args.teachers, args.enrollments, args.seed, args.shuffle)
    with delivery_folder(args.out, shape, results) as folder:
        with timed("load bytes from disk", results):
            files = {item.name: item.read_bytes() for item in sorted(folder.iterdir()) if item.is_file()}
    rows = time_each_file(files, results)
    time_whole_package(files, results)
    print_summary(files, rows, results)
    if args.cprofile:
        print_profile(files, args.top)


if __name__ == "__main__":
    main()
