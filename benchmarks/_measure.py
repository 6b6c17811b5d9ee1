"""Shared measuring helpers for the benchmarks: wall time of a block, and peak resident memory."""

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@contextmanager
def timed(label: str, results: dict[str, float]) -> Iterator[None]:
    """Record the seconds the block took under `label` and print them as one line."""
    started = time.perf_counter()
    yield
    results[label] = time.perf_counter() - started
    print(f"{label:<34} {results[label]:>9.2f} s   (peak RSS {peak_rss_mib():,.0f} MiB)", flush=True)
