"""District schedules: the registry field, one schedule per (cron, zone), and ticks that never re-sync.

Schedules are evaluated with Dagster's own APIs (`build_schedule_context`, `evaluate_tick`) against
the pipeline fixture's real SFTP server and Dagster instance. A OneRoster REST district's tick does
not contact its provider (the run pulls), so its base_url here is never connected to.
"""

import threading
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import yaml

from rostersync_assets.defs.ingest.delivery_runs import LISTING_TAG, SCHEDULED_FOR_TAG, TRIGGER_TAG
from rostersync_assets.defs.ingest.schedules import schedule_name, unscheduled_rest_districts
from rostersync_assets.defs.ingest.sensors import sftp_delivery_sensor, sync_district_roster
from rostersync_assets.defs.partitions import DISTRICT_TAG
from rostersync_assets.delivery_schedule import DeliverySchedule, validate_cron
from rostersync_assets.registry import District, DistrictRegistry, RegistryError
from rostersync_assets.rest_source import RestSource
from rostersync_assets.sandbox.generator import generate_district
from rostersync_assets_tests.fixtures.pipeline import SLUG
from rostersync_assets_tests.fixtures.sftp import free_loopback_port

CHICAGO_5AM = DeliverySchedule("0 5 * * *", "America/Chicago")
FIRES_AT = datetime(2026, 11, 30, 5, 0, tzinfo=ZoneInfo("America/Chicago"))
REST_SLUG = "maple-rest"


def rest_district(slug: str = REST_SLUG, schedule: DeliverySchedule | None = CHICAGO_5AM) -> District:
    """A OneRoster REST district (v1p2, OAuth 2) on `schedule`."""
    source = RestSource.from_mapping({
        "base_url": "https://oneroster.example.org", "version": "v1p2",
        "auth": {"type": "oauth2", "token_url": "https://oneroster.example.org/token", "client_id": "rostersync",
                 "client_secret_env": "MAPLE_ONEROSTER_SECRET"},
    })
    return District(slug=slug, name=slug, lms_tenant=slug, sftp=None, rest=source, schedule=schedule)


@pytest.fixture(autouse=True)
def short_settle(monkeypatch):
    monkeypatch.setenv("ROSTERSYNC_SCHEDULE_SETTLE_S", "0.2")


def schedule_pipeline(pipeline, *others):
    """Register the pipeline's district (and `others`) on the 05:00 Chicago schedule."""
    registry = DistrictRegistry({})
    for district in (pipeline.district, *others):
        registry = registry.with_district(replace(district, schedule=CHICAGO_5AM))
    registry.save(pipeline.home.registry_path)


def evaluate(pipeline, schedule: DeliverySchedule = CHICAGO_5AM):
    return evaluate_with(pipeline, pipeline.definitions(), schedule)


def evaluate_with(pipeline, defs: dg.Definitions, schedule: DeliverySchedule = CHICAGO_5AM, at: datetime = FIRES_AT):
    """One tick of the pair's schedule as the daemon runs it (by default at 05:00 Chicago time)."""
    with dg.build_schedule_context(
        instance=pipeline.instance,
        scheduled_execution_time=at,
        resources=pipeline.resources(),
        repository_def=defs.get_repository_def(),
        instance_ref=pipeline.instance.get_ref(),
    ) as context:
        return defs.resolve_schedule_def(schedule_name(schedule)).evaluate_tick(context)


def record_run(pipeline, request: dg.RunRequest, status: dg.DagsterRunStatus) -> None:
    """A run of the job for `request` in the real instance, in the state under test (executing the
    whole sync would add seconds and prove nothing more here: test_pipeline covers the run itself)."""
    job = pipeline.definitions().resolve_job_def(sync_district_roster.name)
    pipeline.instance.create_run_for_job(job_def=job, tags=request.tags, status=status)


# --- the registry field ---------------------------------------------------------------------------


@pytest.mark.parametrize("cron", ["0 5 * * *", "*/15 6-8 * * mon-fri", "30 2 1,15 * *", "0  5 * *   *", "5/20 * * jan-mar 0"])
def test_valid_cron_lines_are_accepted_single_spaced(cron):
    assert validate_cron(cron) == " ".join(cron.split())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"cron": "0 5 * *", "timezone": "UTC"}, "must have 5 fields"),
        ({"cron": "60 5 * * *", "timezone": "UTC"}, "minute value '60' is outside 0-59"),
        ({"cron": "0 5-3 * * *", "timezone": "UTC"}, "hour range '5-3' runs backwards"),
        ({"cron": "0 5 30 2 *", "timezone": "UTC"}, "never fires"),
        ({"cron": "0 5 * * funday", "timezone": "UTC"}, "day of week value 'funday'"),
        ({"cron": "@daily", "timezone": "UTC"}, "must have 5 fields"),
        ({"cron": "0 5 * * *", "timezone": "America/Springfield"}, "not an IANA time zone"),
        ({"cron": "0 5 * * *", "timezone": "../etc/passwd"}, "not an IANA time zone"),
        ({"cron": "0 5 * * *"}, "timezone is missing"),
        ({"cron": "0 5 * * *", "timezone": "UTC", "tz": "UTC"}, "unknown field(s) tz"),
        ("0 5 * * *", "must be a mapping"),
    ],
)
def test_an_unusable_schedule_is_refused_with_the_district_and_problem_named(tmp_path, raw, message):
    path = tmp_path / "districts.yaml"
    body = {
        "districts": [
            {
                "slug": "lincoln-usd",
                "sftp": {"host": "h", "username": "u", "remote_dir": "/o", "host_key": "ssh-ed25519 AAAA", "password_env": "P"},
                "schedule": raw,
            }
        ]
    }
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(RegistryError, match="district lincoln-usd: schedule: ") as refused:
        DistrictRegistry.load(path)
    assert message in str(refused.value)


def test_a_schedule_survives_the_round_trip_through_the_registry_file(district_pipeline):
    schedule_pipeline(district_pipeline)
    loaded = DistrictRegistry.load(district_pipeline.home.registry_path).get(SLUG)
    assert loaded.schedule == CHICAGO_5AM
    assert "schedule" not in replace(loaded, schedule=None).to_dict()


# --- definitions ----------------------------------------------------------------------------------


def test_one_schedule_per_cron_and_zone_evaluated_in_that_zone(district_pipeline):
    honolulu = DeliverySchedule("0 5 * * *", "Pacific/Honolulu")
    registry = DistrictRegistry({})
    for slug, schedule in (("adams-isd", CHICAGO_5AM), ("birch-isd", CHICAGO_5AM), ("cedar-isd", honolulu), ("dale-isd", None)):
        registry = registry.with_district(replace(district_pipeline.district, slug=slug, lms_tenant=slug, schedule=schedule))
    registry.save(district_pipeline.home.registry_path)
    schedules = {s.name: s for s in district_pipeline.definitions().get_repository_def().schedule_defs}
    assert set(schedules) == {schedule_name(CHICAGO_5AM), schedule_name(honolulu)}
    chicago = schedules[schedule_name(CHICAGO_5AM)]
    assert (chicago.cron_schedule, chicago.execution_timezone) == ("0 5 * * *", "America/Chicago")
    assert chicago.default_status == dg.DefaultScheduleStatus.RUNNING
    dg.Definitions.validate_loadable(district_pipeline.definitions())


def test_without_any_district_schedule_there_is_no_schedule(district_pipeline):
    assert list(district_pipeline.definitions().get_repository_def().schedule_defs) == []


# --- ticks ----------------------------------------------------------------------------------------


def test_a_tick_requests_one_run_per_complete_delivery(district_pipeline):
    schedule_pipeline(district_pipeline)
    district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
    [request] = evaluate(district_pipeline).run_requests
    assert request.partition_key == SLUG and request.tags[TRIGGER_TAG] == "schedule"
    assert request.run_key == f"{SLUG}:{request.tags[LISTING_TAG]}"


def test_a_district_with_a_ready_marker_is_synced_when_the_marker_is_there(district_pipeline):
    marked = replace(district_pipeline.district, sftp=replace(district_pipeline.district.sftp, ready_marker="_READY"))
    DistrictRegistry({}).with_district(replace(marked, schedule=CHICAGO_5AM)).save(district_pipeline.home.registry_path)
    district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
    (district_pipeline.sftp.drop_dir / "_READY").write_text("")
    [request] = evaluate(district_pipeline).run_requests
    assert request.partition_key == SLUG


def test_districts_without_a_delivery_or_a_server_are_named_in_the_skip_reason(district_pipeline):
    unreachable = replace(
        district_pipeline.district, slug="adams-isd", lms_tenant="adams",
        sftp=replace(district_pipeline.district.sftp, port=free_loopback_port()),
    )
    schedule_pipeline(district_pipeline, unreachable)
    result = evaluate(district_pipeline)
    assert result.run_requests == []
    assert "2 district(s) due, nothing to run" in result.skip_message
    assert f"no complete, settled delivery: {SLUG}" in result.skip_message
    assert "not listed: adams-isd: cannot connect to 127.0.0.1:" in result.skip_message


@pytest.mark.parametrize("status", [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.SUCCESS])
def test_a_delivery_already_synced_or_syncing_is_not_synced_again_by_either_trigger(district_pipeline, status):
    schedule_pipeline(district_pipeline)
    district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
    [request] = evaluate(district_pipeline).run_requests
    record_run(district_pipeline, request, status)
    again = evaluate(district_pipeline)
    assert again.run_requests == [] and f"already synced or syncing: {SLUG}" in again.skip_message
    defs, cursor = district_pipeline.definitions(), None
    for _ in range(2):  # the sensor sees the same delivery become ready: it has a run, so no other
        with dg.build_sensor_context(
            instance=district_pipeline.instance, cursor=cursor, definitions=defs,
            instance_ref=district_pipeline.instance.get_ref(), resources=district_pipeline.resources(),
        ) as context:
            tick = defs.resolve_sensor_def(sftp_delivery_sensor.name).evaluate_tick(context)
        cursor = tick.cursor
    assert tick.run_requests == [] and "1 already run by another trigger" in tick.skip_message


def test_a_delivery_whose_run_failed_gets_another_run(district_pipeline):
    schedule_pipeline(district_pipeline)
    district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
    [request] = evaluate(district_pipeline).run_requests
    record_run(district_pipeline, request, dg.DagsterRunStatus.FAILURE)
    [retry] = evaluate(district_pipeline).run_requests
    assert retry.run_key == request.run_key and retry.tags[DISTRICT_TAG] == SLUG


def test_a_delivery_still_being_written_waits(district_pipeline, monkeypatch):
    monkeypatch.setenv("ROSTERSYNC_SCHEDULE_SETTLE_S", "1.0")
    schedule_pipeline(district_pipeline)
    written = district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
    growing = next(path for path in written if path.name == "users.csv")
    grow = threading.Timer(0.4, lambda: growing.write_text(growing.read_text() + "\n"))
    grow.start()
    result = evaluate(district_pipeline)
    grow.join()
    assert result.run_requests == [] and f"no complete, settled delivery: {SLUG}" in result.skip_message


def test_a_pair_no_district_uses_any_more_skips(district_pipeline):
    schedule_pipeline(district_pipeline)
    defs = district_pipeline.definitions()  # loaded while lincoln-usd still had its schedule
    DistrictRegistry({}).with_district(district_pipeline.district).save(district_pipeline.home.registry_path)
    result = evaluate_with(district_pipeline, defs)
    assert result.run_requests == [] and "no district is registered with schedule '0 5 * * *'" in result.skip_message


# --- OneRoster REST districts ---------------------------------------------------------------------


def test_a_rest_district_gets_one_pull_per_tick_keyed_by_district_and_tick(district_pipeline):
    schedule_pipeline(district_pipeline, rest_district(), rest_district("oak-rest"))  # the SFTP folder is empty
    requests = evaluate(district_pipeline).run_requests
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("maple-rest", "maple-rest:pull:20261130T110000Z"),  # 05:00 CST is 11:00 UTC
        ("oak-rest", "oak-rest:pull:20261130T110000Z"),
    ]
    expected = {DISTRICT_TAG: "maple-rest", SCHEDULED_FOR_TAG: "20261130T110000Z", TRIGGER_TAG: "schedule"}
    assert expected.items() <= requests[0].tags.items()
    # Registered by the tick itself (the sensor, which usually does it, may be off).
    assert {"maple-rest", "oak-rest"} <= set(district_pipeline.instance.get_dynamic_partitions("districts"))
    next_tick = evaluate_with(district_pipeline, district_pipeline.definitions(), at=FIRES_AT + timedelta(days=1))
    assert [r.run_key for r in next_tick.run_requests] == ["maple-rest:pull:20261201T110000Z", "oak-rest:pull:20261201T110000Z"]


@pytest.mark.parametrize("status", [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE])
def test_a_tick_evaluated_again_does_not_pull_twice(district_pipeline, status):
    DistrictRegistry({}).with_district(rest_district()).save(district_pipeline.home.registry_path)
    [request] = evaluate(district_pipeline).run_requests
    record_run(district_pipeline, request, status)
    again = evaluate(district_pipeline)
    assert again.run_requests == []
    assert again.skip_message == "1 district(s) due, nothing to run. already pulled for this tick: maple-rest"


def test_sftp_and_rest_districts_share_a_pair_and_each_gets_its_kind_of_run(district_pipeline):
    schedule_pipeline(district_pipeline, rest_district())
    district_pipeline.publish(generate_district(students=40, seed=1, district=SLUG))
    requests = {r.partition_key: r for r in evaluate(district_pipeline).run_requests}
    assert set(requests) == {SLUG, REST_SLUG}
    assert LISTING_TAG in requests[SLUG].tags and SCHEDULED_FOR_TAG not in requests[SLUG].tags
    assert SCHEDULED_FOR_TAG in requests[REST_SLUG].tags and LISTING_TAG not in requests[REST_SLUG].tags


def test_a_rest_district_alone_gets_a_schedule_and_one_without_is_reported(district_pipeline):
    registry = DistrictRegistry({}).with_district(rest_district()).with_district(rest_district("oak-rest", schedule=None))
    registry.save(district_pipeline.home.registry_path)
    schedules = [s.name for s in district_pipeline.definitions().get_repository_def().schedule_defs]
    assert schedules == [schedule_name(CHICAGO_5AM)]
    assert unscheduled_rest_districts(registry) == ["oak-rest"]
