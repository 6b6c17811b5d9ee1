"""Time the synthetic district generator: generation, writing, optional nights, rows and peak RSS.

The sync benchmarks start from these deliveries, so their setup cost and memory must be known
before the pipeline's own figures mean anything. Run from the repository root:

    .venv/bin/python -m benchmarks.generate_district --students 100000 --seed 1 --out /tmp/district
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks._measure import peak_rss_mib

from rostersync_assets.sandbox.generator import generate_district, next_night, write_delivery


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="delivery directory to write")
    parser.add_argument("--nights", type=int, default=0, help="also time this many nights")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    roster = generate_district(students=args.students, seed=args.seed)
    generated = time.perf_counter()
    write_delivery(roster, args.out)
    written = time.perf_counter()
    print(f"students        {args.students:>12,}")
    print(f"generate        {generated - started:>12.2f} s")
    print(f"write           {written - generated:>12.2f} s")
    for entity, frame in roster.tables.items():
        print(f"{entity + '.csv':<22}{len(frame):>12,} rows")
    for night in range(1, args.nights + 1):
        night_started = time.perf_counter()
        roster, expected = next_night(roster, seed=args.seed, night=night)
        seconds = time.perf_counter() - night_started
        print(f"night {night:<9} {seconds:>12.2f} s  {expected.counts()}")
    print(f"peak RSS        {peak_rss_mib():>12,.0f} MiB")


if __name__ == "__main__":
    main()
