"""sftp_delivery_sensor evaluated as the daemon does (through the definitions, with instance_ref)."""

import json
import socket

import dagster as dg

from rostersync_assets.defs.ingest.sensors import sftp_delivery_sensor
from rostersync_assets.defs.partitions import DISTRICT_TAG, districts_partitions
from rostersync_assets.registry import District, DistrictRegistry, SftpSource
from rostersync_assets.sandbox.generator import generate_district
from rostersync_assets_tests.fixtures.pipeline import SLUG


def tick(pipeline, cursor):
    defs = pipeline.definitions()
    context = dg.build_sensor_context(
        instance=pipeline.instance,
        cursor=cursor,
        definitions=defs,
        instance_ref=pipeline.instance.get_ref(),
        resources=pipeline.resources(),
    )
    return defs.resolve_sensor_def(sftp_delivery_sensor.name).evaluate_tick(context)


def unreachable_district(pipeline) -> District:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = pipeline.district.sftp
    return District("adams-isd", "Adams", "adams", SftpSource("127.0.0.1", port, "adams", "/outgoing", source.host_key, password_env=source.password_env))


def test_one_run_per_complete_delivery_and_never_twice(district_pipeline):
    district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
    first = tick(district_pipeline, None)
    assert first.run_requests == []  # first look: the files might still be growing
    second = tick(district_pipeline, first.cursor)
    assert len(second.run_requests) == 1
    request = second.run_requests[0]
    assert request.partition_key == SLUG
    assert request.tags[DISTRICT_TAG] == SLUG
    assert request.run_key.startswith(f"{SLUG}:")
    third = tick(district_pipeline, second.cursor)
    assert third.run_requests == []
    assert set(json.loads(third.cursor)) == {SLUG}  # one small entry per district


def test_a_half_written_delivery_waits(district_pipeline):
    district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
    (district_pipeline.sftp.drop_dir / "manifest.csv").unlink()
    first = tick(district_pipeline, None)
    second = tick(district_pipeline, first.cursor)
    assert second.run_requests == []


def test_a_district_whose_server_is_down_does_not_stop_the_others(district_pipeline):
    registry = DistrictRegistry.load(district_pipeline.home.registry_path)
    registry.with_district(unreachable_district(district_pipeline)).save(district_pipeline.home.registry_path)
    district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
    first = tick(district_pipeline, None)
    second = tick(district_pipeline, first.cursor)
    assert [r.partition_key for r in second.run_requests] == [SLUG]
    assert set(json.loads(second.cursor)) == {SLUG, "adams-isd"}


def test_registered_districts_become_partitions(district_pipeline):
    registry = DistrictRegistry.load(district_pipeline.home.registry_path)
    registry.with_district(unreachable_district(district_pipeline)).save(district_pipeline.home.registry_path)
    result = tick(district_pipeline, None)
    [request] = result.dynamic_partitions_requests
    assert request.partitions_def_name == districts_partitions.name
    assert list(request.partition_keys) == ["adams-isd"]  # lincoln-usd was already a partition
