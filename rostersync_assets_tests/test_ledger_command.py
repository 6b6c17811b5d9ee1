"""`rostersync ledger why|runs` as a user runs them, against a ledger the real sync filled: the
Dagster job over the in-process SFTP server and the sandbox LMS over HTTP, with the ledger on
SQLite and on a real PostgreSQL server (`ledger_url`)."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from rostersync_assets.cli import main
from rostersync_assets.connectors.ledger import BatchContext, SyncLedger
from rostersync_assets.defs.resources import LedgerResource
from rostersync_assets.sandbox.generator import generate_district
from rostersync_assets.sync.push import PlannedChange
from rostersync_assets_tests.fixtures.pipeline import SLUG

STUDENTS = 40


def ledger(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["ledger", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def installed(*argv: str) -> tuple[int, str, str]:
    """The command as a user runs it: a new process, no ROSTERSYNC_LEDGER_URL in its environment."""
    env = {k: v for k, v in os.environ.items() if k != "ROSTERSYNC_LEDGER_URL"}
    done = subprocess.run([sys.executable, "-m", "rostersync_assets.cli", "ledger", *argv], capture_output=True, text=True, timeout=120, env=env)
    return done.returncode, done.stdout, done.stderr


def test_why_and_runs_explain_a_real_sync_end_to_end(district_pipeline, ledger_url, capsys):
    """On SQLite the job writes the home's ledger (the default, read with --home); on PostgreSQL the
    job and the command are pointed at the server's database."""
    roster = generate_district(students=STUDENTS, seed=3, district=SLUG)
    district_pipeline.publish(roster)
    if ledger_url.startswith("sqlite"):
        result, where = district_pipeline.run(), ["--home", str(district_pipeline.home.root)]
        ledger_url = str(district_pipeline.home.ledger_path)
    else:
        result, where = district_pipeline.run(ledger=LedgerResource(url=ledger_url)), ["--ledger-url", ledger_url]
    assert result.success
    enrollment = roster.tables["enrollments"]["sourcedId"].iloc[5]
    with SyncLedger(ledger_url) as store:
        delivery_id = store.runs(SLUG)[0]["delivery_id"]
        approval = store.record_approval(SLUG, delivery_id, "ana.admin", json.dumps({"enrollments": {"deactivate": 0}}))

    code, out, err = ledger(capsys, "why", "--district", SLUG, "--sourced-id", enrollment, *where, "--json")
    assert code == 0, err
    [link] = json.loads(out)["chain"]
    published = (district_pipeline.sftp.drop_dir / "enrollments.csv").read_bytes()
    lines = published.decode().splitlines()
    assert link["run_id"] == result.run_id and link["delivery_id"] == delivery_id and link["entity"] == "enrollments"
    assert link["archive"]["uri"].endswith("enrollments.csv")
    assert link["archive"]["sha256"] == hashlib.sha256(published).hexdigest()
    assert link["file_row"]["file"] == "enrollments.csv"
    assert lines[link["file_row"]["line"] - 1].startswith(enrollment + ",")  # line 1 is the header
    assert link["change"]["operation"] == "create" and link["change"]["hash_before"] == ""
    assert len(link["change"]["hash_after"]) > 0
    assert link["result"] == {"status": "created", "error": None}
    applied = {row.key for row in district_pipeline.lms.store.idempotency_log()}
    assert link["lms_batch"]["idempotency_key"] in applied
    assert link["approvals"] == [{"approved_by": "ana.admin", "approved_at": approval.approved_at, "run_id": "", "summary": approval.summary}]

    code, text, err = installed("why", "--district", SLUG, "--sourced-id", enrollment, *where)
    assert code == 0, err
    assert f"sourcedId {enrollment}: 1 ledger entry" in text
    order = ["delivery   " + delivery_id, "archive    " + link["archive"]["uri"], f"file row   enrollments.csv:{link['file_row']['line']}",
             "change     create", "LMS batch  " + link["lms_batch"]["idempotency_key"], "result     created", "approval   by ana.admin"]
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions)

    code, out, err = ledger(capsys, "runs", "--district", SLUG, *where, "--json")
    assert code == 0, err
    [run] = json.loads(out)["runs"]
    assert run["run_id"] == result.run_id and run["counts"] == {"created": sum(len(t) for t in roster.tables.values())}
    code, text, _ = ledger(capsys, "runs", "--district", SLUG, *where)
    assert code == 0 and result.run_id in text and "created" in text.splitlines()[1]


def test_why_shows_a_dropped_record_and_the_lms_rejection(ledger_url, capsys):
    """A deactivation has no file row (the delivery no longer holds the record); an LMS error is shown."""
    with SyncLedger(ledger_url) as store:
        store.record_batch(BatchContext("r1", SLUG, "d1", "file:///a/users.csv", "users", "k1"),
                           [PlannedChange("create", "u1", 4, "", "h1", None)], [("created", None)])
        store.record_batch(BatchContext("r2", SLUG, "d2", "file:///b/users.csv", "users", "k2"),
                           [PlannedChange("deactivate", "u1", 0, "h1", "", None)], [("error", "rejected: account locked")])
    code, text, err = ledger(capsys, "why", "--district", SLUG, "--sourced-id", "u1", "--ledger-url", ledger_url)
    assert code == 0, err
    newest, oldest = text.split("\n\n")[1:]
    assert "run r2" in newest and "(absent from users.csv)" in newest and "result     error: rejected: account locked" in newest
    assert "run r1" in oldest and "file row   users.csv:4" in oldest and "change     create  - -> h1" in oldest


def test_an_unknown_record_or_district_is_a_clear_exit_1(ledger_url, capsys):
    SyncLedger(ledger_url).close()
    code, out, err = ledger(capsys, "why", "--district", SLUG, "--sourced-id", "no-such-id", "--ledger-url", ledger_url)
    assert (code, out) == (1, "")
    assert f"district {SLUG}" in err and "no ledger entry for sourcedId 'no-such-id'" in err
    code, out, err = ledger(capsys, "runs", "--district", "nobody-usd", "--ledger-url", ledger_url)
    assert (code, out) == (1, "") and "no sync of district nobody-usd" in err


def test_a_missing_home_ledger_is_not_created(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ROSTERSYNC_LEDGER_URL", raising=False)
    code, _, err = ledger(capsys, "runs", "--district", SLUG, "--home", str(tmp_path / "typo"))
    assert code == 1 and "no ledger at" in err and "typo" in err
    assert not (tmp_path / "typo").exists()


def test_the_environment_names_the_ledger_and_its_password_never_shows(monkeypatch, capsys):
    # Port 1 on loopback: nothing listens, so opening fails after the URL was read from the environment.
    monkeypatch.setenv("ROSTERSYNC_LEDGER_URL", "postgresql://rostersync:s3cret-pw@127.0.0.1:1/ledger")
    code, _, err = ledger(capsys, "runs", "--district", SLUG)
    assert code == 1 and "cannot open the ledger postgresql+psycopg://rostersync:***@127.0.0.1:1/ledger" in err
    assert "s3cret-pw" not in err
    code, _, err = ledger(capsys, "runs", "--district", SLUG, "--ledger-url", "mysql://x:s3cret-pw@h:bad/db")
    assert code == 1 and "s3cret-pw" not in err


@pytest.mark.parametrize("argv", [["why", "--district", SLUG], ["runs"], ["explain", "--district", SLUG], []])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["ledger", *argv])
    assert exited.value.code == 2
