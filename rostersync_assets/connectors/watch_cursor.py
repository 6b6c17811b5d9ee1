"""The SFTP sensor's memory between ticks, kept small whatever happens over the years.

Dagster stores a sensor's cursor with its state and with every tick it records (one a minute), so the
cursor must not grow with deliveries or with districts that left. It holds, per district still
watched, only the fingerprint of the last listing seen and of the last one requested; the second is
written only when it differs from the first (after a sync they are equal until the next delivery),
so a quiet night of 500 districts is about 500 x 80 bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from rostersync_assets.connectors.delivery import WatchState


def decode_cursor(text: str | None) -> dict[str, WatchState]:
    """Per-district watch states from a cursor (None or empty for a sensor's first tick).

    Reads both the compact form written by `encode_cursor` and the earlier `{slug: {"seen": ...,
    "requested": ...}}` form, so a running installation keeps its watch across the upgrade.
    """
    if not text:
        return {}
    states: dict[str, WatchState] = {}
    for slug, value in json.loads(text).items():
        if isinstance(value, str):
            states[slug] = WatchState(seen=value, requested=value)
        elif isinstance(value, list):
            seen, requested = value
            states[slug] = WatchState(seen=seen, requested=requested)
        else:
            states[slug] = WatchState(seen=value.get("seen"), requested=value.get("requested"))
    return states


def encode_cursor(states: Mapping[str, WatchState], watched: Iterable[str]) -> str:
    """The cursor for the `watched` districts only: a district no longer registered (or no longer
    delivering over SFTP) leaves no trace, and one never listed successfully needs no entry."""
    body: dict[str, str | list[str | None]] = {}
    for slug in sorted(set(watched)):
        state = states.get(slug)
        if state is None or state.seen is None:
            continue
        body[slug] = state.seen if state.requested == state.seen else [state.seen, state.requested]
    return json.dumps(body, separators=(",", ":"), sort_keys=True)
