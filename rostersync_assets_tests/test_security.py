"""Security properties of ingestion, each against real servers (the in-process SFTP server and OpenSSH sshd,
the sandbox LMS over HTTP, a real Dagster instance):

- a server presenting another host key than the pinned one is refused, showing the offered fingerprint;
- names that would escape the district's folder (traversal, absolute, NUL, symlinks out) are never fetched;
- a district's credentials cannot read another district's folder;
- a run for one district never writes to another district's LMS tenant (and the registry refuses two
  districts on one tenant);
- after a full run, no secret and no personal value of the delivery is anywhere Dagster keeps things.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from pathlib import Path

import pytest
import yaml

from rostersync_assets.connectors.delivery import stage_delivery
from rostersync_assets.connectors.lms_client import LmsClient, LmsOperation
from rostersync_assets.connectors.sftp import (
    HostKeyMismatch,
    RetryPolicy,
    SftpConnector,
    SftpCredentials,
    SftpEndpoint,
    SftpError,
    SftpLoginRefused,
    UnsafeFileName,
    host_key_fingerprint,
)
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.registry import DistrictRegistry, RegistryError, SftpSource
from rostersync_assets.sandbox.generator import DistrictRoster, generate_district, write_delivery
from rostersync_assets.sandbox.sftp_server import running_sftp_server
from rostersync_assets_tests.fixtures.pipeline import PASSWORD_ENV, SLUG, TENANT, DistrictPipeline
from rostersync_assets_tests.fixtures.sftp import SftpTestServer, free_loopback_port

# Retries would show up as seconds of waiting: refusals must be immediate.
PATIENT = RetryPolicy(attempts=5, backoff_s=2.0)
HOSTILE_NAMES = (
    "../grant-usd/outgoing/users.csv", "/etc/passwd", "a/../../users.csv", "..users.csv", "users\x00.csv",
    "..\\users.csv", ".hidden.csv",
)
NEIGHBOUR_SLUG, NEIGHBOUR_TENANT = "grant-usd", "grant"


@pytest.fixture(params=["sftp_server", "openssh_server"])
def server(request: pytest.FixtureRequest) -> SftpTestServer:
    return request.getfixturevalue(request.param)


def _assert_refused_showing(endpoint: SftpEndpoint, credentials: SftpCredentials, offered_line: str) -> None:
    started = time.monotonic()
    with pytest.raises(HostKeyMismatch) as raised:
        with SftpConnector(endpoint, credentials, retry=PATIENT):
            pass
    assert time.monotonic() - started < 1.5  # refused at once, never retried
    assert raised.value.offered_fingerprint == host_key_fingerprint(offered_line)
    assert f"server offered ssh-ed25519 {host_key_fingerprint(offered_line)}" in str(raised.value)
    assert host_key_fingerprint(endpoint.host_key) in str(raised.value)


def test_sshd_presenting_a_new_host_key_is_refused(openssh_server: SftpTestServer) -> None:
    pinned = openssh_server.endpoint()
    with SftpConnector(pinned, openssh_server.credentials) as sftp:
        sftp.list_files()  # the pin works before the change
    new_key = openssh_server.replace_host_key()  # the same address now answers with another key
    _assert_refused_showing(pinned, openssh_server.credentials, new_key)


def test_an_in_process_server_presenting_a_new_host_key_is_refused(tmp_path: Path) -> None:
    port, password = free_loopback_port(), secrets.token_urlsafe(12)
    users = {"lincoln-usd": password}
    with running_sftp_server(tmp_path / "root", users, host_key_path=tmp_path / "old", port=port) as old:
        pinned = SftpEndpoint(old.host, port, "lincoln-usd", "/", old.host_key)
    with running_sftp_server(tmp_path / "root", users, host_key_path=tmp_path / "new", port=port) as new:
        _assert_refused_showing(pinned, SftpCredentials(password=password), new.host_key)


def test_hostile_names_in_a_listing_are_left_out_and_never_fetched(sftp_server: SftpTestServer, tmp_path: Path) -> None:
    (sftp_server.drop_dir / "manifest.csv").write_bytes(b"propertyName,value\n")
    (sftp_server.drop_dir / "users.csv").write_bytes(b"sourcedId\n")
    sftp_server.faults.extra_names = HOSTILE_NAMES  # what a compromised server could list

    with SftpConnector(sftp_server.endpoint(), sftp_server.credentials) as sftp:
        assert {f.name for f in sftp.list_files()} >= set(HOSTILE_NAMES)
        staged = stage_delivery(sftp, district="lincoln-usd", source="sftp://test", staging_root=tmp_path / "staging")
        for name in HOSTILE_NAMES:
            with pytest.raises(UnsafeFileName):
                sftp.download(name, tmp_path / "out" / "file")

    assert [f.name for f in staged.files] == ["manifest.csv", "users.csv"]
    assert set(staged.left_out) == set(HOSTILE_NAMES)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in (tmp_path / "staging").rglob("*")) == sorted(["lincoln-usd", staged.delivery_id, "manifest.csv", "users.csv"])


@pytest.mark.parametrize("marker", ["../_READY", "/tmp/_READY", ".ready", "a/_READY", "_READY\n"])
def test_a_ready_marker_outside_the_folder_is_refused_by_the_registry(tmp_path: Path, marker: str) -> None:
    path = tmp_path / "districts.yaml"
    sftp = {"host": "h", "username": "u", "remote_dir": "/o", "host_key": "k", "password_env": "P"}
    path.write_text(yaml.safe_dump({"districts": [{"slug": "lincoln-usd", "sftp": {**sftp, "ready_marker": marker}}]}))
    with pytest.raises(RegistryError, match="district lincoln-usd: sftp.ready_marker .* plain file name"):
        DistrictRegistry.load(path)
    path.write_text(yaml.safe_dump({"districts": [{"slug": "lincoln-usd", "sftp": {**sftp, "ready_marker": "_READY"}}]}))
    registry = DistrictRegistry.load(path)
    assert registry.get("lincoln-usd").sftp.ready_marker == "_READY"
    registry.save(path)
    assert DistrictRegistry.load(path) == registry


def test_symlinks_out_of_the_district_folder_are_not_followed(server: SftpTestServer, tmp_path: Path) -> None:
    neighbour = server.neighbour
    (neighbour.drop_dir / "users.csv").write_bytes(b"grant's students\n")
    (server.drop_dir / "users.csv").symlink_to("/etc/passwd")
    (server.drop_dir / "classes.csv").symlink_to("../../grant-usd/outgoing/users.csv")

    with SftpConnector(server.endpoint(), server.credentials) as sftp:
        assert sftp.list_files() == []
        for name in ("users.csv", "classes.csv"):
            with pytest.raises(UnsafeFileName, match=f"'{name}' .* is a symbolic link"):
                sftp.download(name, tmp_path / "out" / name)
    assert os.listdir(tmp_path / "out") == []


def test_a_districts_credentials_cannot_read_another_districts_folder(server: SftpTestServer, tmp_path: Path) -> None:
    neighbour = server.neighbour
    (neighbour.drop_dir / "users.csv").write_bytes(b"grant's students\n")

    for top in ("/", "/..", "/../.."):  # each resolves to the login's own root
        with SftpConnector(server.endpoint(top), server.credentials) as sftp:
            assert sftp.list_files() == []
            with pytest.raises(SftpError, match="No such file"):
                sftp.download("users.csv", tmp_path / "stolen.csv")
    for other in ("/../grant-usd/outgoing", "../grant-usd/outgoing", "/grant-usd/outgoing"):
        with SftpConnector(server.endpoint(other), server.credentials) as sftp:
            with pytest.raises(SftpError, match="No such file"):
                sftp.list_files()
    # Nor can one district's secrets log in as the other.
    as_neighbour = dataclasses.replace(server.endpoint(), username=neighbour.username)
    for credentials in server.logins.values():
        with pytest.raises(SftpLoginRefused):
            with SftpConnector(as_neighbour, credentials, retry=PATIENT):
                pass
    assert not (tmp_path / "stolen.csv").exists()


def test_two_districts_may_not_share_an_lms_tenant(tmp_path: Path) -> None:
    entry = "- slug: {slug}\n  lms_tenant: lincoln\n  sftp: {{host: h, username: u, remote_dir: /o, host_key: k, password_env: P}}\n"
    path = tmp_path / "districts.yaml"
    path.write_text("districts:\n" + entry.format(slug="lincoln-usd") + entry.format(slug="lincoln-east"))
    with pytest.raises(RegistryError, match="districts lincoln-east and lincoln-usd share lms_tenant 'lincoln'"):
        DistrictRegistry.load(path)
    path.write_text("districts:\n" + entry.format(slug="lincoln-usd"))
    lincoln = DistrictRegistry.load(path).get("lincoln-usd")
    with pytest.raises(RegistryError, match="share lms_tenant"):
        DistrictRegistry.load(path).with_district(dataclasses.replace(lincoln, slug="lincoln-east"))


def _register_neighbour(pipeline: DistrictPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Add grant-usd (its own SFTP login and folder, its own tenant) next to the pipeline's district."""
    neighbour = pipeline.sftp.neighbour
    monkeypatch.setenv("GRANT_SFTP_PASSWORD", neighbour.credentials.password or "")
    source = SftpSource(neighbour.host, neighbour.port, neighbour.username, neighbour.remote_dir,
                        neighbour.host_key, password_env="GRANT_SFTP_PASSWORD")
    grant = dataclasses.replace(pipeline.district, slug=NEIGHBOUR_SLUG, name="Grant", lms_tenant=NEIGHBOUR_TENANT, sftp=source)
    DistrictRegistry.load(pipeline.home.registry_path).with_district(grant).save(pipeline.home.registry_path)


def test_a_run_for_one_district_never_touches_another_districts_tenant(
    district_pipeline: DistrictPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_neighbour(district_pipeline, monkeypatch)
    # Both districts number their records the same way, so a run crossing tenants would collide on ids.
    lincoln = generate_district(students=40, seed=29, district=SLUG)
    grant = generate_district(students=40, seed=31, district=NEIGHBOUR_SLUG)
    shared_ids = set(lincoln.tables["users"]["sourcedId"]) & set(grant.tables["users"]["sourcedId"])
    assert shared_ids
    write_delivery(grant, district_pipeline.sftp.neighbour.drop_dir)
    lms = district_pipeline.lms
    with LmsClient(lms.url, lms.token) as client:  # grant's tenant already holds its roster
        for entity in ENTITIES:
            operations = [LmsOperation("upsert", row["sourcedId"], row) for row in grant.tables[entity].to_dict("records")]
            client.send_batch(NEIGHBOUR_TENANT, entity, operations, f"grant-seed-{entity}")
    before = {entity: lms.store.active_records(NEIGHBOUR_TENANT, entity) for entity in ENTITIES}
    batches_before = len(lms.store.idempotency_log())

    district_pipeline.publish(lincoln)
    result = district_pipeline.run()

    assert result.success
    assert {entity: lms.store.active_records(NEIGHBOUR_TENANT, entity) for entity in ENTITIES} == before
    new_batches = lms.store.idempotency_log()[batches_before:]
    assert new_batches and {row.tenant for row in new_batches} == {TENANT}
    # ... and it read its own folder only: the LMS holds lincoln's records, none of grant's.
    assert set(lms.store.active_records(TENANT, "users")) == set(lincoln.tables["users"]["sourcedId"])


def _personal_values(roster: DistrictRoster) -> set[str]:
    users, demographics = roster.tables["users"], roster.tables["demographics"]
    values = [*users["email"], *users["username"], *(users["givenName"] + " " + users["familyName"]),
              *users["password"], *demographics["birthDate"]]
    return {value for value in values if value}


def _stored_text(pipeline: DistrictPipeline, run_id: str) -> dict[str, bytes]:
    """Everything Dagster keeps about the run: the event log as text (messages, events, asset and check
    metadata) and every file under the instance's folder (run, event and schedule databases, compute logs)."""
    instance = pipeline.instance
    events = "\n".join((e.user_message or "") + repr(e.dagster_event) for e in instance.all_logs(run_id))
    stored = {"event log": events.encode()}
    for path in Path(instance.root_directory).rglob("*"):
        if path.is_file():
            stored[str(path)] = path.read_bytes()
    return stored


def test_no_secret_or_personal_value_reaches_dagster(
    district_pipeline: DistrictPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Supersedes the event-log-only scan: secrets and the delivery's personal values, everywhere Dagster writes."""
    roster = generate_district(students=80, seed=13, district=SLUG)
    users = roster.tables["users"].copy()
    users["password"] = [secrets.token_urlsafe(10) for _ in range(len(users))]  # passwords in the delivery
    roster = DistrictRoster({**roster.tables, "users": users})
    # The district logs in with a key and a password; both, and the LMS token, are in the process.
    private_key = district_pipeline.sftp.logins["ed25519"].private_key
    monkeypatch.setenv("LINCOLN_SFTP_KEY", private_key)
    keyed = dataclasses.replace(district_pipeline.district.sftp, private_key_env="LINCOLN_SFTP_KEY")
    registry = DistrictRegistry.load(district_pipeline.home.registry_path)
    registry.with_district(dataclasses.replace(district_pipeline.district, sftp=keyed)).save(district_pipeline.home.registry_path)
    district_pipeline.publish(roster)

    result = district_pipeline.run(log_level="DEBUG")  # everything logged also lands in the compute logs

    assert result.success
    key_body = [line for line in private_key.splitlines() if "PRIVATE KEY" not in line and len(line) >= 16]
    secret_values = {PASSWORD_ENV: os.environ[PASSWORD_ENV], "LMS token": district_pipeline.lms.token,
                     **{f"private key line {i}": line for i, line in enumerate(key_body)}}
    stored = _stored_text(district_pipeline, result.run_id)
    # There is something to scan: ids in the event log, the run's log lines in its compute logs.
    assert b"delivery_id" in stored["event log"]
    assert any("compute_logs" in where and b"staged delivery" in blob for where, blob in stored.items())
    leaks = [(label, where) for where, blob in stored.items() for label, value in secret_values.items() if value.encode() in blob]
    leaks += [(value, where) for where, blob in stored.items() for value in _personal_values(roster) if value.encode() in blob]
    assert leaks == []
