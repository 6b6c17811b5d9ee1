"""sftp_delivery_sensor evaluated as the daemon does (through the definitions, with instance_ref).

Failing servers are real sockets: a closed port (refused at once), a listener that accepts TCP and
never sends the SSH banner (a hung server), and the sandbox server pinned under another host key.
"""

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import dagster as dg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from rostersync_assets.defs.ingest.delivery_runs import LISTING_TAG, TRIGGER_TAG
from rostersync_assets.defs.ingest.sensors import sftp_delivery_sensor
from rostersync_assets.defs.partitions import DISTRICT_TAG, districts_partitions
from rostersync_assets.registry import District, DistrictRegistry
from rostersync_assets.sandbox.generator import generate_district
from rostersync_assets_tests.fixtures.pipeline import SLUG
from rostersync_assets_tests.fixtures.sftp import free_loopback_port


def tick(pipeline, cursor):
    defs = pipeline.definitions()
    with dg.build_sensor_context(
        instance=pipeline.instance,
        cursor=cursor,
        definitions=defs,
        instance_ref=pipeline.instance.get_ref(),
        resources=pipeline.resources(),
    ) as context:
        return defs.resolve_sensor_def(sftp_delivery_sensor.name).evaluate_tick(context)


def register(pipeline, *districts: District) -> None:
    registry = DistrictRegistry.load(pipeline.home.registry_path)
    for district in districts:
        registry = registry.with_district(district)
    registry.save(pipeline.home.registry_path)


def twin(pipeline, slug: str, **sftp_changes: object) -> District:
    """Another district on the pipeline's SFTP login, with some of its SFTP settings changed."""
    return replace(
        pipeline.district, slug=slug, name=slug, lms_tenant=slug, sftp=replace(pipeline.district.sftp, **sftp_changes)
    )


@contextmanager
def hung_server() -> Iterator[int]:
    """A port where the kernel completes the TCP handshake but nobody ever speaks SSH."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # never accept(): connections wait in the backlog, the banner never comes
        yield sock.getsockname()[1]


def other_host_key() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_one_run_per_complete_delivery_and_never_twice(district_pipeline):
    district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
    first = tick(district_pipeline, None)
    assert first.run_requests == []  # first look: the files might still be growing
    second = tick(district_pipeline, first.cursor)
    assert len(second.run_requests) == 1
    request = second.run_requests[0]
    assert request.partition_key == SLUG
    assert request.tags[DISTRICT_TAG] == SLUG and request.tags[TRIGGER_TAG] == "sensor"
    assert request.run_key == f"{SLUG}:{request.tags[LISTING_TAG]}"
    third = tick(district_pipeline, second.cursor)
    assert third.run_requests == []
    assert set(json.loads(third.cursor)) == {SLUG}  # one small entry per district


def test_a_half_written_delivery_waits(district_pipeline):
    district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
    (district_pipeline.sftp.drop_dir / "manifest.csv").unlink()
    first = tick(district_pipeline, None)
    second = tick(district_pipeline, first.cursor)
    assert second.run_requests == []


def test_failing_servers_are_named_with_their_reason_and_do_not_hold_up_the_others(district_pipeline, monkeypatch):
    monkeypatch.setenv("ROSTERSYNC_LISTING_TIMEOUT_S", "1")
    with hung_server() as hung_port:
        register(
            district_pipeline,
            twin(district_pipeline, "adams-isd", port=free_loopback_port()),
            twin(district_pipeline, "birch-isd", port=hung_port),
            twin(district_pipeline, "cedar-isd", host_key=other_host_key()),
        )
        district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
        started = time.monotonic()
        first = tick(district_pipeline, None)
        second = tick(district_pipeline, first.cursor)
        elapsed = time.monotonic() - started
    assert [r.partition_key for r in second.run_requests] == [SLUG]
    assert elapsed < 6  # two ticks; the hung server costs its 1 s timeout each, not the tick
    skip = first.skip_message
    assert "4 district(s) watched, 1 listed" in skip
    assert "adams-isd: " in skip and "birch-isd: " in skip and "cedar-isd: host key mismatch" in skip
    hung_reason = skip.split("birch-isd: ")[1].split(";")[0]
    assert f"127.0.0.1:{hung_port}" in hung_reason and "(after 1." in hung_reason  # gave up at its timeout
    password = district_pipeline.sftp.credentials.password
    assert password and password not in skip
    assert set(json.loads(second.cursor)) == {SLUG}  # never listed: nothing to remember


def test_a_tick_stops_waiting_at_its_budget(district_pipeline, monkeypatch):
    monkeypatch.setenv("ROSTERSYNC_LISTING_TIMEOUT_S", "5")
    monkeypatch.setenv("ROSTERSYNC_LISTING_BUDGET_S", "1.5")
    with hung_server() as hung_port:
        register(district_pipeline, twin(district_pipeline, "birch-isd", port=hung_port))
        district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
        started = time.monotonic()
        result = tick(district_pipeline, None)
        elapsed = time.monotonic() - started
    assert elapsed < 4
    assert "birch-isd: not looked at within the tick's budget of 1.5 s" in result.skip_message
    assert set(json.loads(result.cursor)) == {SLUG}


def test_a_failed_look_keeps_what_was_seen_before(district_pipeline):
    district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
    first = tick(district_pipeline, None)
    register(district_pipeline, replace(district_pipeline.district, sftp=replace(district_pipeline.district.sftp, port=free_loopback_port())))
    during_outage = tick(district_pipeline, first.cursor)
    assert during_outage.cursor == first.cursor
    register(district_pipeline, district_pipeline.district)
    after = tick(district_pipeline, during_outage.cursor)
    assert [r.partition_key for r in after.run_requests] == [SLUG]


def test_the_cursor_stays_bounded_as_deliveries_accumulate_and_districts_leave(district_pipeline):
    register(district_pipeline, twin(district_pipeline, "adams-isd"))
    cursor, sizes = None, []
    for night in range(4):
        district_pipeline.publish(generate_district(students=20, seed=night, district=SLUG))
        for _ in range(2):
            cursor = tick(district_pipeline, cursor).cursor
        sizes.append(len(cursor))
    assert set(json.loads(cursor)) == {SLUG, "adams-isd"}
    assert len(set(sizes)) == 1  # four deliveries later, the same size
    DistrictRegistry({}).with_district(district_pipeline.district).save(district_pipeline.home.registry_path)
    assert set(json.loads(tick(district_pipeline, cursor).cursor)) == {SLUG}


def test_a_cursor_written_by_the_previous_sensor_version_is_still_understood(district_pipeline):
    district_pipeline.publish(generate_district(students=20, seed=1, district=SLUG))
    compact = tick(district_pipeline, None).cursor
    seen, requested = json.loads(compact)[SLUG]
    assert requested is None
    legacy = json.dumps({SLUG: {"seen": seen, "requested": None}, "gone-isd": {"seen": "ab", "requested": "ab"}})
    result = tick(district_pipeline, legacy)
    assert [r.partition_key for r in result.run_requests] == [SLUG]
    assert set(json.loads(result.cursor)) == {SLUG}


def test_registered_districts_become_partitions(district_pipeline):
    register(district_pipeline, twin(district_pipeline, "adams-isd", port=free_loopback_port()))
    result = tick(district_pipeline, None)
    [request] = result.dynamic_partitions_requests
    assert request.partitions_def_name == districts_partitions.name
    assert list(request.partition_keys) == ["adams-isd"]  # lincoln-usd was already a partition


@pytest.mark.parametrize("value", ["0", "many"])
def test_unusable_listing_settings_fail_the_tick_with_the_variable_named(district_pipeline, monkeypatch, value):
    monkeypatch.setenv("ROSTERSYNC_LISTING_WORKERS", value)
    with pytest.raises(Exception, match="ROSTERSYNC_LISTING_WORKERS"):
        tick(district_pipeline, None)
