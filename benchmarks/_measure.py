"""Shared measuring helpers for the benchmarks: wall time of a block, and peak resident memory."""

import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Restart the peak measured by `peak_rss_since_reset_mib` (Linux only: clear_refs "5" resets VmHWM).

    ru_maxrss never goes down, so without this one step's peak would hide the next step's.
    Returns False where the kernel does not offer it.
    """
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_since_reset_mib() -> float:
    """Peak resident memory since the last `reset_peak_rss` (VmHWM), else since the process started."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


@contextmanager
def timed(label: str, results: dict[str, float]) -> Iterator[None]:
    """Record the seconds the block took under `label` and print them as one line."""
    started = time.perf_counter()
    yield
    results[label] = time.perf_counter() - started
    print(f"{label:<34} {results[label]:>9.2f} s   (peak RSS {peak_rss_mib():,.0f} MiB)", flush=True)


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by process `pid` (Linux /proc), or by this process when None.

    Lets a benchmark say which side of a client/server exchange spent the time.
    """
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
