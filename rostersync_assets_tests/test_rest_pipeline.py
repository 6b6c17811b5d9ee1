"""End to end for a OneRoster REST district: the local provider over HTTP, the local archive, the
sandbox LMS over HTTP and a real Dagster instance running `sync_district_roster`."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from rostersync_assets.definitions import build_definitions
from rostersync_assets.defs.ingest.sensors import sync_district_roster
from rostersync_assets.defs.partitions import districts_partitions
from rostersync_assets.defs.resources import build_resources
from rostersync_assets.home import RostersyncHome
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.registry import DistrictRegistry
from rostersync_assets.sandbox.generator import generate_district
from rostersync_assets.sandbox.oneroster_provider import OneRosterProvider, running_provider

SLUG = "maple-rest"
TENANT = "maple"
SECRET_ENV = "MAPLE_ONEROSTER_SECRET"


def registry_entry(version: str, url: str, provider: OneRosterProvider) -> dict:
    if version == "v1p1":
        auth = {"type": "oauth1", "consumer_key": provider.settings.consumer_key, "consumer_secret_env": SECRET_ENV}
    else:
        auth = {
            "type": "oauth2", "token_url": f"{url}/oauth/token", "client_id": provider.settings.client_id,
            "client_secret_env": SECRET_ENV, "scope": "https://purl.imsglobal.org/spec/or/v1p2/scope/roster-core.readonly",
        }
    return {
        "slug": SLUG, "lms_tenant": TENANT,
        "rest": {"base_url": url, "version": version, "auth": auth, "page_size": 200, "delta": True},
    }


def run(home: RostersyncHome, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = build_definitions(build_resources("local", home)).resolve_job_def(sync_district_roster.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return job.execute_in_process(instance=instance, partition_key=SLUG, raise_on_error=False)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(districts_partitions.name, [SLUG])
        yield instance


@pytest.fixture
def rest_district(tmp_path: Path, sandbox_lms, monkeypatch: pytest.MonkeyPatch):
    """Registers a REST district for a version on a running provider; returns (roster, provider, home, secret)."""
    with ExitStack() as stack:

        def register(version: str):
            roster = generate_district(students=150, seed=5, district=SLUG)
            past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            provider = OneRosterProvider.from_tables(roster.tables, modified=past, max_limit=100)
            secret = provider.settings.consumer_secret if version == "v1p1" else provider.settings.client_secret
            home = RostersyncHome(tmp_path / "home").ensure()
            monkeypatch.setenv(SECRET_ENV, secret)
            monkeypatch.setenv("ROSTERSYNC_LMS_URL", sandbox_lms.url)
            monkeypatch.setenv("ROSTERSYNC_LMS_TOKEN", sandbox_lms.token)
            url = stack.enter_context(running_provider(provider))
            home.registry_path.write_text(json.dumps({"districts": [registry_entry(version, url, provider)]}))
            assert DistrictRegistry.load(home.registry_path).get(SLUG).sftp is None
            return roster, provider, home, secret

        yield register


def assert_lms_holds(sandbox_lms, roster) -> None:
    for entity in ENTITIES:
        assert set(sandbox_lms.store.active_records(TENANT, entity)) == set(roster.tables[entity]["sourcedId"]), entity


def test_v1p2_oauth2_district_syncs_everything(rest_district, sandbox_lms, instance):
    roster, provider, home, secret = rest_district("v1p2")
    result = run(home, instance)
    assert result.success
    assert_lms_holds(sandbox_lms, roster)
    assert provider.tokens_issued == 1
    user = sandbox_lms.store.active_records(TENANT, "users")[roster.tables["users"]["sourcedId"][0]]
    assert user["role"] == roster.tables["users"]["role"][0]


def test_v1p1_oauth1_district_syncs_then_pulls_only_changes(rest_district, sandbox_lms, instance):
    roster, provider, home, secret = rest_district("v1p1")
    first = run(home, instance)
    assert first.success
    assert_lms_holds(sandbox_lms, roster)
    raw = first.output_for_node("raw_roster_delivery")
    assert any(f["name"] == "users-page-00001.json" for f in raw["files"])
    assert secret not in json.dumps(raw)

    # The SIS drops one enrollment and renames a class after the first pull: the next pull is a delta.
    later = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    dropped, renamed = roster.tables["enrollments"]["sourcedId"][0], roster.tables["classes"]["sourcedId"][0]
    provider.touch("enrollments", {dropped}, later, status="tobedeleted")
    provider.touch("classes", {renamed}, later, title="Renamed class")
    second = run(home, instance)
    assert second.success
    pull = second.output_for_node("raw_roster_delivery")
    manifest = json.loads(Path(next(f["path"] for f in pull["files"] if f["name"] == "rest-pull.json")).read_text())
    assert manifest["mode"] == "delta" and manifest["endpoints"]["classes"]["records"] == 1
    assert sandbox_lms.store.active_records(TENANT, "classes")[renamed]["title"] == "Renamed class"
    expected_enrollments = set(roster.tables["enrollments"]["sourcedId"]) - {dropped}
    assert set(sandbox_lms.store.active_records(TENANT, "enrollments")) == expected_enrollments
