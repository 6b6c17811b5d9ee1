"""Look at many districts' servers at once without letting any of them hold up the rest.

A sensor or schedule tick has a hard limit (Dagster gives up on an evaluation after 60 s by default,
and then keeps neither its run requests nor its cursor), so one tick over hundreds of districts must
finish whatever their servers do: each look runs on a bounded thread pool, each server gets its own
timeout (applied by the caller's connector), and the tick as a whole stops waiting at a budget
below Dagster's limit. A look that fails or is still running then is reported with its reason, never
raised, so one district's outage cannot cost the others their runs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from rostersync_assets.connectors.sftp import SftpError

K = TypeVar("K")
T = TypeVar("T")
R = TypeVar("R")

WORKERS_ENV = "ROSTERSYNC_LISTING_WORKERS"
TIMEOUT_ENV = "ROSTERSYNC_LISTING_TIMEOUT_S"
BUDGET_ENV = "ROSTERSYNC_LISTING_BUDGET_S"
SETTLE_ENV = "ROSTERSYNC_SCHEDULE_SETTLE_S"


@dataclass(frozen=True)
class ListingSettings:
    """How a tick looks at the districts' folders.

    `workers` listings run at once (paramiko's handshakes are CPU-bound, so more threads than a few
    per core only add GIL contention); `timeout_s` bounds each phase of one district's look (TCP
    connect, SSH banner, key exchange, login, each SFTP request); after `budget_s` the tick stops
    waiting and reports the districts still being looked at; `settle_s` is the pause between the two
    listings a scheduled look makes, so a file still being uploaded shows up as a change.
    """

    workers: int = 16
    timeout_s: float = 10.0
    budget_s: float = 40.0
    settle_s: float = 5.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"{WORKERS_ENV} must be at least 1, not {self.workers}")
        for name, value in ((TIMEOUT_ENV, self.timeout_s), (BUDGET_ENV, self.budget_s)):
            if value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value}")
        if self.settle_s < 0:
            raise ValueError(f"{SETTLE_ENV} must not be negative, not {self.settle_s}")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ListingSettings:
        """The defaults, overridden by the ROSTERSYNC_LISTING_* / ROSTERSYNC_SCHEDULE_SETTLE_S variables."""
        defaults = cls()
        return cls(
            workers=_number(environ, WORKERS_ENV, int, defaults.workers),
            timeout_s=_number(environ, TIMEOUT_ENV, float, defaults.timeout_s),
            budget_s=_number(environ, BUDGET_ENV, float, defaults.budget_s),
            settle_s=_number(environ, SETTLE_ENV, float, defaults.settle_s),
        )


@dataclass(frozen=True)
class LookFailed:
    """Why one district could not be looked at this tick (no secret: host, port, user, fingerprints)."""

    reason: str


def look_in_parallel(
    items: Mapping[K, T],
    look: Callable[[T], R],
    *,
    workers: int,
    budget_s: float,
) -> dict[K, R | LookFailed]:
    """`look(item)` for every item on at most `workers` threads; returns each result or LookFailed.

    Waits at most `budget_s` in all. Looks not finished by then are abandoned (their threads end on
    their own timeouts) and reported, as are looks not yet started. Items are started in random
    order, so when a tick keeps running out of budget it is not always the same districts that wait.
    """
    if not items:
        return {}
    keys = list(items)
    random.shuffle(keys)
    pool = ThreadPoolExecutor(max_workers=min(workers, len(keys)), thread_name_prefix="district-look")
    futures: dict[K, Future[R | LookFailed]] = {
        key: pool.submit(_look_one, look, items[key]) for key in keys
    }
    try:
        done, _ = wait(futures.values(), timeout=budget_s)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    late = LookFailed(f"not looked at within the tick's budget of {budget_s:g} s")
    return {key: future.result() if future in done else late for key, future in futures.items()}


def _look_one(look: Callable[[T], R], item: T) -> R | LookFailed:
    started = time.monotonic()
    try:
        return look(item)
    except Exception as error:  # reported per district; the tick goes on for the others
        return LookFailed(f"{describe_failure(error)} (after {time.monotonic() - started:.1f} s)")


def describe_failure(error: BaseException) -> str:
    """A failure as one line for an operator.

    Our own errors (SftpError and its kinds, configuration ValueErrors such as a missing credential
    variable) are written to be shown as they are and never quote a secret; anything else gets its
    type name in front, since its message alone may not say what happened.
    """
    if isinstance(error, (SftpError, ValueError)) and str(error):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _number(environ: Mapping[str, str], name: str, kind: type[int] | type[float], default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a {'whole ' if kind is int else ''}number, not {raw!r}") from None
