"""`rostersync approve`: what it shows, what it refuses, what it records (a real home and SQLite ledger,
the verdict written as `roster_changes` writes it; no Dagster run needed)."""

import json

import pytest

from rostersync_assets.cli import main as rostersync
from rostersync_assets.connectors.ledger import SyncLedger
from rostersync_assets.home import RostersyncHome
from rostersync_assets.registry import District, DistrictRegistry, SftpSource
from rostersync_assets.sync.safety import DEACTIVATION, Hold, SafetyPolicy, SafetyVerdict, ScopeCounts
from rostersync_assets.sync.verdicts import load_judged_delivery, save_judged_delivery

SLUG = "lincoln-usd"
DELIVERY = "20260902T020000Z-6b9a09e17901"
HELD = SafetyVerdict(
    holds=(Hold(DEACTIVATION, "users", "", 300, 320, 300 / 320, 0.10, ("u-1", "u-2")),),
    counts=(ScopeCounts("users", "", 320, 0, 0, 0, 300, 0), ScopeCounts("classes", "", 40, 0, 0, 0, 0, 0)),
)


@pytest.fixture
def home(tmp_path, monkeypatch) -> RostersyncHome:
    monkeypatch.delenv("ROSTERSYNC_LEDGER_URL", raising=False)
    home = RostersyncHome(tmp_path / "home").ensure()
    source = SftpSource(host="h", port=22, username="u", remote_dir="/o", host_key="ssh-ed25519 AAAA", password_env="X")
    DistrictRegistry({}).with_district(District(SLUG, "Lincoln", "lincoln", source)).save(home.registry_path)
    SyncLedger(home.ledger_path).close()  # the pipeline's first run creates it
    return home


def approve(home: RostersyncHome, capsys, *args: str) -> tuple[int, str, str]:
    code = rostersync(["approve", *args, "--home", str(home.root)])
    out, err = capsys.readouterr()
    return code, out, err


def test_approve_shows_the_held_counts_and_records_the_approval(home, capsys):
    save_judged_delivery(home.tables_dir, SLUG, DELIVERY, "run-1", SafetyPolicy(), HELD)
    code, out, err = approve(home, capsys, SLUG, DELIVERY, "--by", "Dana Ops")
    assert code == 0, err
    assert "held by 1 rule(s)" in out
    assert "deactivation: users district-wide: 300 of 320 active record(s) deactivated (93.8% > 10%); e.g. u-1, u-2" in out
    assert "users: 0 / 0 / 0 / 300 of 320" in out and "classes:" not in out  # entities without changes left out
    with SyncLedger(home.ledger_path) as ledger:
        approval = ledger.approval_for(SLUG, DELIVERY)
    assert approval.approved_by == "Dana Ops" and approval.run_id == ""
    assert json.loads(approval.summary)["holds"][0]["count"] == 300
    code, out, _ = approve(home, capsys, SLUG, DELIVERY, "--by", "Someone Else")
    assert code == 0 and "already approved by Dana Ops" in out
    with SyncLedger(home.ledger_path) as ledger:
        assert len(ledger.approvals(SLUG)) == 1


def test_approve_refuses_unknown_districts_other_deliveries_and_unheld_ones(home, capsys):
    code, _, err = approve(home, capsys, "adams-isd", DELIVERY, "--by", "Dana")
    assert code == 2 and "district adams-isd is not registered" in err
    code, _, err = approve(home, capsys, SLUG, DELIVERY, "--by", "Dana")
    assert code == 1 and "no change set has been judged yet" in err
    save_judged_delivery(home.tables_dir, SLUG, DELIVERY, "run-1", SafetyPolicy(), HELD)
    code, _, err = approve(home, capsys, SLUG, "20260903T020000Z-aaaaaaaaaaaa", "--by", "Dana")
    assert code == 1 and f"the last judged delivery is {DELIVERY}" in err
    code, _, err = approve(home, capsys, SLUG, DELIVERY, "--by", "  ")
    assert code == 2 and "--by must name" in err
    save_judged_delivery(home.tables_dir, SLUG, DELIVERY, "run-2", SafetyPolicy(), SafetyVerdict((), HELD.counts))
    code, _, err = approve(home, capsys, SLUG, DELIVERY, "--by", "Dana")
    assert code == 1 and "was not held" in err
    with SyncLedger(home.ledger_path) as ledger:
        assert ledger.approvals(SLUG) == []


def test_the_judged_delivery_round_trips(home):
    saved = save_judged_delivery(home.tables_dir, SLUG, DELIVERY, "run-1", SafetyPolicy(mode="preview"), HELD)
    assert load_judged_delivery(home.tables_dir, SLUG) == saved
    assert load_judged_delivery(home.tables_dir, "adams-isd") is None
