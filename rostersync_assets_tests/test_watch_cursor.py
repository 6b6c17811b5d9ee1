"""The sensor's cursor: one small entry per watched district, whatever the history (pure)."""

import json

from rostersync_assets.connectors.delivery import WatchState, watch_step
from rostersync_assets.connectors.sftp import RemoteFile
from rostersync_assets.connectors.watch_cursor import decode_cursor, encode_cursor


def delivery(night: int) -> list[RemoteFile]:
    return [RemoteFile("manifest.csv", 100 + night, 1_700_000_000 + night), RemoteFile("users.csv", 5000 + night, 1_700_000_000 + night)]


def test_months_of_nights_for_hundreds_of_districts_keep_the_cursor_the_same_size():
    slugs = [f"district-{i:03d}" for i in range(200)]
    cursor, sizes = None, set()
    for night in range(60):
        states = decode_cursor(cursor)
        for slug in slugs:
            for _ in range(2):  # two looks a night: seen, then ready
                states[slug], _ = watch_step(states.get(slug, WatchState()), delivery(night))
        cursor = encode_cursor(states, slugs)
        sizes.add(len(cursor))
    assert len(sizes) == 1
    assert len(cursor) < len(slugs) * 90  # after a sync, one fingerprint per district


def test_a_district_no_longer_watched_leaves_no_trace():
    states = {"adams-isd": WatchState("a" * 64, "a" * 64), "birch-isd": WatchState("b" * 64, None)}
    assert set(json.loads(encode_cursor(states, ["birch-isd"]))) == {"birch-isd"}


def test_a_district_never_listed_needs_no_entry():
    assert encode_cursor({"adams-isd": WatchState()}, ["adams-isd"]) == "{}"


def test_states_round_trip_in_the_compact_form():
    states = {"adams-isd": WatchState("a" * 64, "a" * 64), "birch-isd": WatchState("b" * 64, "c" * 64), "cedar-isd": WatchState("d" * 64, None)}
    encoded = encode_cursor(states, states)
    assert json.loads(encoded)["adams-isd"] == "a" * 64  # seen == requested: written once
    assert decode_cursor(encoded) == states


def test_the_earlier_cursor_form_is_read():
    legacy = json.dumps({"adams-isd": {"seen": "a" * 64, "requested": None}})
    assert decode_cursor(legacy) == {"adams-isd": WatchState("a" * 64, None)}
    assert decode_cursor(None) == {} and decode_cursor("") == {}
