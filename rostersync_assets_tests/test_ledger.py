"""The ledger and sync state: only acknowledged records advance; every write is traceable."""

from rostersync_assets.connectors.ledger import BatchContext, SyncLedger
from rostersync_assets.sync.push import PlannedChange


def change(op: str, sid: str, before: str = "", after: str = "h1") -> PlannedChange:
    return PlannedChange(op=op, sourced_id=sid, line=7, hash_before=before, hash_after=after, record=None)


CONTEXT = BatchContext(run_id="r1", district="lincoln-usd", delivery_id="d1", archive_uri="file:///a/users.csv", entity="users", idempotency_key="k1")


def test_state_advances_only_for_acknowledged_records(tmp_path):
    ledger = SyncLedger(tmp_path / "ledger.db")
    acks = ledger.record_batch(CONTEXT, [change("create", "u1"), change("create", "u2")], [("created", None), ("error", "rejected: role")])
    assert acks == 1
    state = ledger.load_state("lincoln-usd", "users")
    assert state.to_dict("records") == [{"sourcedId": "u1", "content_hash": "h1", "active": True}]
    assert ledger.load_state("other-district", "users").empty


def test_deactivation_keeps_last_hash_and_marks_inactive(tmp_path):
    ledger = SyncLedger(tmp_path / "ledger.db")
    ledger.record_batch(CONTEXT, [change("create", "u1")], [("created", None)])
    ledger.record_batch(CONTEXT, [change("deactivate", "u1", before="h1", after="")], [("deactivated", None)])
    assert ledger.load_state("lincoln-usd", "users").to_dict("records") == [{"sourcedId": "u1", "content_hash": "h1", "active": False}]


def test_history_traces_a_record_newest_first(tmp_path):
    ledger = SyncLedger(tmp_path / "ledger.db")
    ledger.record_batch(CONTEXT, [change("create", "u1")], [("created", None)])
    ledger.record_batch(CONTEXT, [change("update", "u1", before="h1", after="h2")], [("updated", None)])
    history = ledger.history("lincoln-usd", "u1")
    assert [h["operation"] for h in history] == ["update", "create"]
    assert history[0]["source_file"] == "users.csv" and history[0]["source_line"] == 7
    assert history[0]["archive_uri"] == "file:///a/users.csv" and history[0]["idempotency_key"] == "k1"
    assert ledger.run_counts("lincoln-usd", "r1") == {"created": 1, "updated": 1}
