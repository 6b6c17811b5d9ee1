"""The demo: a generated district served from a real SFTP server, carried through Dagster to the sandbox LMS.

Everything runs on embedded defaults under one home folder: the Dagster instance (SQLite), the
local archive, the ledger and the sandbox LMS database. Each night the generator writes a
delivery into the district's SFTP folder, the real `sftp_delivery_sensor` looks twice (a delivery
is complete when two listings agree), and the run it requests is executed on the home's instance,
so the Dagster UI shows the same runs, lineage and checks afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from rostersync_assets.connectors.lms_client import LmsClient
from rostersync_assets.definitions import build_definitions
from rostersync_assets.defs.ingest.sensors import sftp_delivery_sensor, sync_district_roster
from rostersync_assets.defs.resources import build_resources
from rostersync_assets.home import RostersyncHome
from rostersync_assets.onboarding_runs import QUIET_RUN_CONFIG, summarize
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.registry import District, DistrictRegistry, SftpSource
from rostersync_assets.sandbox.generator import DistrictRoster, ExpectedChanges, generate_district, next_night, write_delivery
from rostersync_assets.sandbox.lms_server import running_sandbox_lms
from rostersync_assets.sandbox.sftp_server import SftpServerHandle, running_sftp_server
from rostersync_assets.sync.payloads import content_hash

DEMO_SLUG = "demo-district"
DEMO_TENANT = "demo-district"
REMOTE_DIR = "/outgoing"
SFTP_PASSWORD_ENV = "ROSTERSYNC_DEMO_SFTP_PASSWORD"
LMS_URL_ENV = "ROSTERSYNC_LMS_URL"
LMS_TOKEN_ENV = "ROSTERSYNC_LMS_TOKEN"
# Night 1 is delivered at 02:00 UTC on this day, night k k-1 days later (the archive layout shows it).
FIRST_NIGHT = datetime(2026, 9, 1, 2, 0, tzinfo=UTC)


class DemoError(RuntimeError):
    """The demo cannot run as asked; the message says what to do."""


@dataclass
class NightReport:
    """One night: the delivery synced, what the LMS answered, and what the generator changed."""

    night: int
    delivery_id: str
    success: bool
    created: int = 0
    updated: int = 0
    deactivated: int = 0
    failed: int = 0
    expected: dict[str, int] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "night": self.night,
            "delivery_id": self.delivery_id,
            "success": self.success,
            "created": self.created,
            "updated": self.updated,
            "deactivated": self.deactivated,
            "failed": self.failed,
            "expected": self.expected,
            "failed_checks": self.failed_checks,
        }


@dataclass
class DemoReport:
    district: str
    tenant: str
    nights: list[NightReport]
    lms_matches_delivery: bool
    mismatches: dict[str, int]
    sensor_cursor: str | None = None

    @property
    def ok(self) -> bool:
        return self.lms_matches_delivery and all(n.success and n.failed == 0 for n in self.nights)

    def to_json(self) -> dict[str, object]:
        return {
            "district": self.district,
            "tenant": self.tenant,
            "nights": [n.to_json() for n in self.nights],
            "lms_matches_delivery": self.lms_matches_delivery,
            "mismatches": self.mismatches,
        }


def reset_demo_home(home: RostersyncHome) -> None:
    """Start the demo district from scratch (LMS tenant, ledger, folders); refuse in a real home."""
    registry = DistrictRegistry.load(home.registry_path)
    others = sorted(set(registry.districts) - {DEMO_SLUG})
    if others:
        raise DemoError(
            f"{home.root} also serves {', '.join(others)}: run the demo in its own home (--home DIR)"
        )
    for path in (home.lms_db_path, home.ledger_path):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    for folder in (home.sftp_root / DEMO_SLUG, home.staging_dir / DEMO_SLUG, home.tables_dir):
        shutil.rmtree(folder, ignore_errors=True)


def register_demo_district(home: RostersyncHome, server: SftpServerHandle) -> District:
    """Register the demo district in the home, pinned to this server's host key."""
    district = District(
        slug=DEMO_SLUG,
        name="Demo District (generated)",
        lms_tenant=DEMO_TENANT,
        sftp=SftpSource(
            host=server.host,
            port=server.port,
            username=DEMO_SLUG,
            remote_dir=REMOTE_DIR,
            host_key=server.host_key,
            password_env=SFTP_PASSWORD_ENV,
        ),
    )
    DistrictRegistry.load(home.registry_path).with_district(district).save(home.registry_path)
    return district


def publish_night(roster: DistrictRoster, outgoing: Path, night: int) -> None:
    """Replace the folder's delivery with this night's, stamped with the night's delivery time."""
    if outgoing.exists():
        for old in outgoing.iterdir():
            old.unlink()
    outgoing.mkdir(parents=True, exist_ok=True)
    stamp = (FIRST_NIGHT + timedelta(days=night - 1)).timestamp()
    for path in write_delivery(roster, outgoing):
        os.utime(path, (stamp, stamp))


def _sensor_run_request(
    defs: dg.Definitions, resources: dict[str, object], instance: dg.DagsterInstance, cursor: str | None
) -> tuple[dg.RunRequest | None, str | None]:
    """Evaluate the sensor as the daemon would, applying its partition requests; returns a run request."""
    sensor = defs.resolve_sensor_def(sftp_delivery_sensor.name)
    # Only what the sensor uses: a resource with a per-run teardown (the ledger) cannot be built for a tick.
    needed = {key: resources[key] for key in sensor.required_resource_keys}
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, instance_ref=instance.get_ref(), resources=needed
    )
    data = sensor.evaluate_tick(context)
    for request in data.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return (data.run_requests[0] if data.run_requests else None), data.cursor


def _night_report(night: int, result: dg.ExecuteInProcessResult, expected: ExpectedChanges | None) -> NightReport:
    run = summarize(DEMO_SLUG, result)
    return NightReport(
        night=night,
        delivery_id=run.delivery_id,
        success=run.success,
        created=run.created,
        updated=run.updated,
        deactivated=run.deactivated,
        failed=run.failed,
        expected=expected.counts() if expected else {},
        failed_checks=run.failed_checks,
    )


def _lms_mismatches(client: LmsClient, roster: DistrictRoster) -> dict[str, int]:
    """Per entity, how many records differ between the LMS's active set and the last delivery."""
    mismatches: dict[str, int] = {}
    for entity in ENTITIES:
        delivered = {row["sourcedId"]: content_hash(row, entity) for row in roster.rows(entity)}
        live = {
            item["sourcedId"]: content_hash(item, entity)
            for item in client.iter_records(DEMO_TENANT, entity)
            if item.get("active")
        }
        mismatches[entity] = len(set(delivered.items()) ^ set(live.items()))
    return mismatches


@contextmanager
def demo_servers(home: RostersyncHome) -> Iterator[tuple[SftpServerHandle, str]]:
    """The district's SFTP server and the sandbox LMS, both on loopback, with fresh secrets in the env."""
    os.environ[SFTP_PASSWORD_ENV] = secrets.token_urlsafe(24)
    os.environ.setdefault(LMS_TOKEN_ENV, secrets.token_urlsafe(24))
    with ExitStack() as stack:
        server = stack.enter_context(
            running_sftp_server(home.sftp_root, {DEMO_SLUG: os.environ[SFTP_PASSWORD_ENV]}, host_key_path=home.sftp_host_key_path)
        )
        url = stack.enter_context(running_sandbox_lms(home.lms_db_path, os.environ[LMS_TOKEN_ENV]))
        os.environ[LMS_URL_ENV] = url
        yield server, url


def run_demo(
    home: RostersyncHome, *, students: int, nights: int, seed: int, say: Callable[[str], None]
) -> DemoReport:
    """Run `nights` nights for the demo district; servers must be running (see `demo_servers`)."""
    server_url = os.environ[LMS_URL_ENV]
    resources = build_resources("local", home)
    defs = build_definitions(resources)
    job = defs.resolve_job_def(sync_district_roster.name)
    outgoing = home.sftp_root / DEMO_SLUG / REMOTE_DIR.strip("/")
    reports: list[NightReport] = []
    say(f"generating {DEMO_SLUG}: {students} students (seed {seed})")
    roster = generate_district(students=students, seed=seed, district=DEMO_SLUG)
    cursor: str | None = None
    with dg.DagsterInstance.get() as instance:
        for night in range(1, nights + 1):
            expected = None
            if night > 1:
                roster, expected = next_night(roster, seed=seed, night=night)
            publish_night(roster, outgoing, night)
            say(f"night {night}: delivery published on sftp://{DEMO_SLUG}@127.0.0.1{REMOTE_DIR} ({roster.summary()})")
            request, cursor = _sensor_run_request(defs, resources, instance, cursor)  # first look: delivery seen
            if request is None:
                request, cursor = _sensor_run_request(defs, resources, instance, cursor)  # second look: unchanged, complete
            if request is None:
                raise DemoError(f"night {night}: the sensor did not recognise the delivery as complete")
            say(f"night {night}: sftp_delivery_sensor requested run {request.run_key}; running the pipeline")
            result = job.execute_in_process(
                instance=instance, partition_key=request.partition_key, tags=request.tags,
                run_config=QUIET_RUN_CONFIG, raise_on_error=False,
            )
            report = _night_report(night, result, expected)
            reports.append(report)
            say(_describe_night(report))
            if not report.success:
                break
    with LmsClient(server_url, os.environ[LMS_TOKEN_ENV]) as client:
        mismatches = _lms_mismatches(client, roster)
    return DemoReport(DEMO_SLUG, DEMO_TENANT, reports, not any(mismatches.values()), mismatches, cursor)


def _describe_night(report: NightReport) -> str:
    if not report.success:
        checks = ", ".join(report.failed_checks) or "see the run in the Dagster UI"
        return f"night {report.night}: NOT synced (failed checks: {checks})"
    line = (
        f"night {report.night}: delivery {report.delivery_id}: {report.created} created, {report.updated} updated, "
        f"{report.deactivated} deactivated, {report.failed} failed"
    )
    if report.expected:
        as_generated = report.expected == {"created": report.created, "updated": report.updated, "deactivated": report.deactivated}
        line += " (matches the generated changes)" if as_generated else f" (generated: {report.expected})"
    return line
