"""`rostersync districts add|list|test|remove|sync` against a real SFTP server, the sandbox LMS and the
home's Dagster instance. The onboarding test runs the command in a subprocess, as a new user would."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import dagster as dg
import pytest
from cryptography.fernet import Fernet

from rostersync_assets import districts_command
from rostersync_assets.cli import build_parser, main
from rostersync_assets.connectors.sftp import host_key_fingerprint
from rostersync_assets.defs.partitions import districts_partitions
from rostersync_assets.home import RostersyncHome
from rostersync_assets.registry import DistrictRegistry
from rostersync_assets.sandbox.generator import generate_district, write_delivery
from rostersync_assets.secret_refs import SECRETS_FILE_NAME, SecretsFile
from rostersync_assets_tests.fixtures.lms import SandboxLms
from rostersync_assets_tests.fixtures.s3 import REGION
from rostersync_assets_tests.fixtures.sftp import SftpTestServer

SLUG = "lincoln-usd"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RostersyncHome:
    """A fresh home; the environment a command sets for it is restored after the test."""
    home = RostersyncHome(tmp_path / "home")
    for name, value in home.environment().items():
        monkeypatch.setenv(name, value)
    return home


def _publish(server: SftpTestServer, students: int = 30, seed: int = 5, slug: str = SLUG) -> None:
    write_delivery(generate_district(students=students, seed=seed, district=slug), server.drop_dir)


def _add_args(server: SftpTestServer, home: RostersyncHome, *extra: str, slug: str = SLUG) -> list[str]:
    return [
        "districts", "add", slug, "--host", server.host, "--port", str(server.port), "--username", server.username,
        "--remote-dir", server.remote_dir, "--home", str(home.root), *extra,
    ]


def test_add_as_a_new_user_registers_and_syncs_the_district(
    home: RostersyncHome, sftp_server: SftpTestServer, sandbox_lms: SandboxLms
) -> None:
    _publish(sftp_server)
    password = sftp_server.credentials.password
    env = {
        **os.environ,
        "ROSTERSYNC_SECRETS_KEY": Fernet.generate_key().decode(),
        "ROSTERSYNC_LMS_URL": sandbox_lms.url,
        "ROSTERSYNC_LMS_TOKEN": sandbox_lms.token,
    }
    fingerprint = host_key_fingerprint(sftp_server.host_key)
    args = _add_args(sftp_server, home, "--host-key-fingerprint", fingerprint, "--store-password", "--sync")

    done = subprocess.run(
        [sys.executable, "-m", "rostersync_assets.cli", *args], input=f"{password}\n", capture_output=True, text=True,
        env=env, timeout=300,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"offers ssh-ed25519 {fingerprint}" in done.stdout
    assert "accepted" in done.stdout and "1 of 1 district(s) synced" in done.stdout
    assert "Overview > Backfills" in done.stdout
    assert password not in done.stdout + done.stderr
    for stored in (home.registry_path, home.root / "secrets.enc.json"):
        assert password not in stored.read_text()
    registered = DistrictRegistry.load(home.registry_path).get(SLUG).sftp
    assert registered.host_key == sftp_server.host_key and registered.password_secret.kind == "file"
    assert len(sandbox_lms.store.active_records(SLUG, "users")) > 30  # the students and their teachers
    with dg.DagsterInstance.get() as instance:  # the home fixture points DAGSTER_HOME at the home's instance
        assert instance.get_dynamic_partitions(districts_partitions.name) == [SLUG]
        (backfill,) = instance.get_backfills()
        assert backfill.status.value == "COMPLETED_SUCCESS"
        (run,) = instance.get_runs()
        assert run.tags["dagster/backfill"] == backfill.backfill_id and run.tags["rostersync/trigger"] == "onboarding"
        synced = instance.get_latest_materialization_event(dg.AssetKey("lms_sync_results"))
        assert synced is not None and synced.dagster_event.partition == SLUG
        assert not [entry for entry in instance.all_logs(run.run_id) if password in str(entry)]

    assert main(["districts", "remove", SLUG, "--home", str(home.root)]) == 0
    assert SecretsFile(home.root / SECRETS_FILE_NAME, None).names() == []  # its stored password went with it
    assert any(home.archive_dir.rglob("manifest.json"))  # the archive is kept


def test_add_refuses_a_host_key_other_than_the_one_the_admin_was_given(
    home: RostersyncHome, sftp_server: SftpTestServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(sftp_server)
    monkeypatch.setenv("LINCOLN_PW", sftp_server.credentials.password)
    wrong = "SHA256:" + "A" * 43
    code = main(_add_args(sftp_server, home, "--host-key-fingerprint", wrong, "--password-env", "LINCOLN_PW"))

    err = capsys.readouterr().err
    assert code == 1
    assert f"offered host key ssh-ed25519 {host_key_fingerprint(sftp_server.host_key)}, not the expected {wrong}" in err
    assert not home.registry_path.exists()


def test_add_without_a_terminal_needs_the_fingerprint_flag(
    home: RostersyncHome, sftp_server: SftpTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(_add_args(sftp_server, home, "--password-env", "LINCOLN_PW"))
    err = capsys.readouterr().err
    assert code == 2
    assert f"the server offers {host_key_fingerprint(sftp_server.host_key)}" in err
    assert not home.registry_path.exists()


@pytest.mark.parametrize("answer", ["n", "y"])
def test_in_a_terminal_the_admin_confirms_the_fingerprint_and_nothing_is_pinned_without_yes(
    answer: str, home: RostersyncHome, sftp_server: SftpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prompts, driven as a terminal user would answer them (a scripted `ask`, since pytest has no tty)."""
    _publish(sftp_server)
    monkeypatch.setenv("LINCOLN_PW", sftp_server.credentials.password)
    answers = iter([sftp_server.host, sftp_server.username, sftp_server.remote_dir, "1", "LINCOLN_PW", answer])
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(["districts", "add", SLUG, "--port", str(sftp_server.port), "--home", str(home.root)])
    code = districts_command.run_action(args, districts_command.Console(out, err, interactive=True, ask=ask))

    assert asked[-1].startswith(f"Is {host_key_fingerprint(sftp_server.host_key)} the fingerprint the district gave you")
    if answer == "n":
        assert code == 1 and "host key not confirmed; nothing was saved" in err.getvalue()
        assert not home.registry_path.exists()
    else:
        assert code == 0, err.getvalue()
        assert DistrictRegistry.load(home.registry_path).get(SLUG).sftp.password_env == "LINCOLN_PW"


def test_add_refuses_a_delivery_the_nightly_rules_reject(
    home: RostersyncHome, sftp_server: SftpTestServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(sftp_server)
    (sftp_server.drop_dir / "users.csv").write_text("sourcedId,status\n", encoding="utf-8")
    monkeypatch.setenv("LINCOLN_PW", sftp_server.credentials.password)
    fingerprint = host_key_fingerprint(sftp_server.host_key)
    code = main(_add_args(sftp_server, home, "--host-key-fingerprint", fingerprint, "--password-env", "LINCOLN_PW"))
    captured = capsys.readouterr()
    assert code == 1
    assert "rejected" in captured.out and "nothing was saved" in captured.err
    assert not home.registry_path.exists()


def test_list_test_and_remove_with_an_aws_secret(
    home: RostersyncHome, sftp_server: SftpTestServer, s3_server: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _publish(sftp_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", s3_server)
    password = sftp_server.credentials.password
    arn = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name=f"rostersync/{SLUG}/{os.urandom(4).hex()}", SecretString=json.dumps({"password": password})
    )["ARN"]
    fingerprint = host_key_fingerprint(sftp_server.host_key)

    assert main(_add_args(sftp_server, home, "--host-key-fingerprint", fingerprint, "--password-secret-arn", arn,
                          "--secret-json-key", "password")) == 0
    assert main(["districts", "list", "--json", "--home", str(home.root)]) == 0
    assert main(["districts", "test", SLUG, "--home", str(home.root)]) == 0
    output = capsys.readouterr().out
    (listed,) = json.loads(next(line for line in output.splitlines() if line.startswith("[")))
    assert listed["host_key"] == fingerprint and listed["last_delivery_synced"] == ""
    assert listed["credentials"] == f"password: AWS Secrets Manager secret {arn} (key password)"
    assert "host key matches the pin; login and listing OK" in output and "accepted" in output
    assert password not in output + home.registry_path.read_text()

    assert main(["districts", "remove", SLUG, "--home", str(home.root)]) == 0
    assert "archived deliveries" in capsys.readouterr().out
    assert DistrictRegistry.load(home.registry_path).districts == {}
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions(districts_partitions.name) == []
    assert main(["districts", "test", SLUG, "--home", str(home.root)]) == 2


def test_sync_of_several_districts_is_one_backfill(
    home: RostersyncHome, sftp_server: SftpTestServer, sandbox_lms: SandboxLms, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    neighbour = sftp_server.neighbour
    fingerprint = host_key_fingerprint(sftp_server.host_key)
    for server, var in ((sftp_server, "LINCOLN_PW"), (neighbour, "GRANT_PW")):
        _publish(server, students=20, slug=server.username)
        monkeypatch.setenv(var, server.credentials.password)
        assert main(_add_args(server, home, "--host-key-fingerprint", fingerprint, "--password-env", var,
                              slug=server.username)) == 0
    monkeypatch.setenv("ROSTERSYNC_LMS_URL", sandbox_lms.url)
    monkeypatch.setenv("ROSTERSYNC_LMS_TOKEN", sandbox_lms.token)

    code = main(["districts", "sync", SLUG, neighbour.username, "--home", str(home.root)])

    assert code == 0, capsys.readouterr()
    assert "2 of 2 district(s) synced" in capsys.readouterr().out
    with dg.DagsterInstance.get() as instance:
        (backfill,) = instance.get_backfills()
        runs = instance.get_runs()
        assert sorted(run.tags["dagster/partition"] for run in runs) == sorted([SLUG, neighbour.username])
        assert {run.tags["dagster/backfill"] for run in runs} == {backfill.backfill_id}
    for slug in (SLUG, neighbour.username):
        assert sandbox_lms.store.active_records(slug, "users")
