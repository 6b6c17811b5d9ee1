"""The ledger and sync state, on SQLite and on a real PostgreSQL server (the `ledger_url` fixture):
only acknowledged records advance, every write and approval is traceable, older ledgers upgrade."""

import sqlite3

import pytest
import sqlalchemy as sa

from rostersync_assets.connectors.ledger import BatchContext, SyncLedger
from rostersync_assets.defs.resources import LedgerResource, build_resources
from rostersync_assets.home import RostersyncHome
from rostersync_assets.sync.push import PlannedChange


def change(op: str, sid: str, before: str = "", after: str = "h1", school: str = "s1", natural_key: str = "nk1") -> PlannedChange:
    return PlannedChange(op=op, sourced_id=sid, line=7, hash_before=before, hash_after=after, record=None, school=school, natural_key=natural_key)


CONTEXT = BatchContext(
    run_id="r1", district="lincoln-usd", delivery_id="d1", archive_uri="file:///a/users.csv", entity="users",
    idempotency_key="k1", archive_sha256="ab" * 32,
)


@pytest.fixture
def ledger(ledger_url):
    with SyncLedger(ledger_url) as store:
        yield store


def test_state_advances_only_for_acknowledged_records(ledger):
    acks = ledger.record_batch(CONTEXT, [change("create", "u1"), change("create", "u2")], [("created", None), ("error", "rejected: role")])
    assert acks == 1
    state = ledger.load_state("lincoln-usd", "users")
    assert state.to_dict("records") == [{"sourcedId": "u1", "content_hash": "h1", "active": True, "school": "s1"}]
    assert ledger.natural_keys("lincoln-usd", "users", ["u1", "u2"]) == {"u1": "nk1"}
    assert ledger.load_state("other-district", "users").empty
    assert ledger.load_state("lincoln-usd", "classes").empty


def test_empty_state_has_the_contract_columns_and_types(ledger):
    state = ledger.load_state("lincoln-usd", "users")
    assert list(state.columns) == ["sourcedId", "content_hash", "active", "school"]
    assert state["active"].dtype == bool and state["school"].dtype == "category" and state.empty


def test_deactivation_keeps_last_hash_school_and_natural_key(ledger):
    ledger.record_batch(CONTEXT, [change("create", "u1")], [("created", None)])
    ledger.record_batch(CONTEXT, [change("deactivate", "u1", before="h1", after="", school="", natural_key="")], [("deactivated", None)])
    assert ledger.load_state("lincoln-usd", "users").to_dict("records") == [
        {"sourcedId": "u1", "content_hash": "h1", "active": False, "school": "s1"}
    ]
    assert ledger.natural_keys("lincoln-usd", "users", ["u1"]) == {"u1": "nk1"}


def test_upsert_overwrites_school_and_natural_key(ledger):
    ledger.record_batch(CONTEXT, [change("create", "u1")], [("created", None)])
    ledger.record_batch(CONTEXT, [change("update", "u1", before="h1", after="h2", school="s2", natural_key="nk2")], [("updated", None)])
    assert ledger.load_state("lincoln-usd", "users").to_dict("records") == [
        {"sourcedId": "u1", "content_hash": "h2", "active": True, "school": "s2"}
    ]
    assert ledger.natural_keys("lincoln-usd", "users", ["u1"]) == {"u1": "nk2"}


def test_natural_keys_are_looked_up_by_id_in_chunks_within_one_district_and_entity(ledger, monkeypatch):
    monkeypatch.setattr("rostersync_assets.connectors.ledger._LOOKUP_IDS", 2)
    ledger.record_batch(CONTEXT, [change("create", f"u{i}", natural_key=f"nk{i}") for i in range(5)], [("created", None)] * 5)
    other = BatchContext("r1", "other-usd", "d1", "", "users", "k2")
    ledger.record_batch(other, [change("create", "u9", natural_key="other")], [("created", None)])
    asked = ["u4", "u0", "u4", "u2", "u9", "unknown"]
    assert ledger.natural_keys("lincoln-usd", "users", asked) == {"u0": "nk0", "u2": "nk2", "u4": "nk4"}
    assert ledger.natural_keys("lincoln-usd", "classes", asked) == {} and ledger.natural_keys("lincoln-usd", "users", []) == {}


def test_history_traces_a_record_newest_first(ledger):
    ledger.record_batch(CONTEXT, [change("create", "u1")], [("created", None)])
    ledger.record_batch(CONTEXT, [change("update", "u1", before="h1", after="h2")], [("updated", None)])
    history = ledger.history("lincoln-usd", "u1")
    assert [h["operation"] for h in history] == ["update", "create"]
    assert history[0]["source_file"] == "users.csv" and history[0]["source_line"] == 7
    assert history[0]["archive_uri"] == "file:///a/users.csv" and history[0]["archive_sha256"] == "ab" * 32
    assert history[0]["idempotency_key"] == "k1" and history[0]["hash_before"] == "h1" and history[0]["hash_after"] == "h2"
    assert ledger.run_counts("lincoln-usd", "r1") == {"created": 1, "updated": 1}


def test_a_failing_state_write_rolls_back_the_batchs_ledger_rows(ledger):
    """The ledger rows and the state advance are one transaction: neither lands without the other."""
    broken = PlannedChange(op="create", sourced_id="u1", line=3, hash_before="", hash_after="h1", record=None, school=None)  # type: ignore[arg-type]
    with pytest.raises(sa.exc.IntegrityError):
        ledger.record_batch(CONTEXT, [broken], [("created", None)])
    assert ledger.history("lincoln-usd", "u1") == []
    assert ledger.load_state("lincoln-usd", "users").empty
    with ledger._engine.connect() as conn:  # no batch row left behind either
        assert conn.execute(sa.text("SELECT count(*) FROM ledger_batches")).scalar() == 0


def test_batches_recorded_together_commit_together(ledger):
    second = BatchContext("r1", "lincoln-usd", "d1", "file:///a/users.csv", "users", "k2")
    broken = change("create", "u2")._replace(school=None)  # NOT NULL: the second batch's state write fails
    with pytest.raises(sa.exc.IntegrityError):
        ledger.record_batches([(CONTEXT, [change("create", "u1")], [("created", None)]), (second, [broken], [("created", None)])])
    assert ledger.history("lincoln-usd", "u1") == [] and ledger.load_state("lincoln-usd", "users").empty
    acks = ledger.record_batches([
        (CONTEXT, [change("create", "u1")], [("created", None)]),
        (second, [change("create", "u2"), change("create", "u3")], [("created", None), ("error", "rejected")]),
    ])
    assert acks == 2 and sorted(ledger.load_state("lincoln-usd", "users")["sourcedId"]) == ["u1", "u2"]
    assert [h["idempotency_key"] for h in ledger.history("lincoln-usd", "u3")] == ["k2"]


def test_batches_of_one_write_change_the_state_in_their_order(ledger):
    ledger.record_batch(CONTEXT, [change("create", "u1")], [("created", None)])
    second, third = (BatchContext("r1", "lincoln-usd", "d1", "file:///a/users.csv", "users", key) for key in ("k2", "k3"))
    ledger.record_batches([  # deactivated, then reactivated with a new hash and school, in one transaction
        (CONTEXT, [change("deactivate", "u1", before="h1", after="", school="", natural_key="")], [("deactivated", None)]),
        (second, [change("reactivate", "u1", before="h1", after="h2", school="s2")], [("updated", None)]),
        (third, [change("create", "u2"), change("update", "u1", before="h2", after="h3", school="s3")], [("created", None), ("updated", None)]),
    ])
    assert ledger.load_state("lincoln-usd", "users").sort_values("sourcedId").to_dict("records") == [
        {"sourcedId": "u1", "content_hash": "h3", "active": True, "school": "s3"},
        {"sourcedId": "u2", "content_hash": "h1", "active": True, "school": "s1"},
    ]


def test_runs_list_syncs_newest_first_with_counts(ledger):
    ledger.record_batch(CONTEXT, [change("create", "u1"), change("create", "u2")], [("created", None), ("error", "rejected")])
    second = BatchContext("r2", "lincoln-usd", "d2", "file:///b/users.csv", "users", "k2")
    ledger.record_batch(second, [change("create", "u2")], [("created", None)])
    ledger.record_batch(BatchContext("r9", "other-usd", "d9", "", "users", "k9"), [change("create", "x")], [("created", None)])
    runs = ledger.runs("lincoln-usd")
    assert [(r["run_id"], r["delivery_id"], r["counts"]) for r in runs] == [
        ("r2", "d2", {"created": 1}),
        ("r1", "d1", {"created": 1, "error": 1}),
    ]
    assert runs[0]["started_at"] <= runs[0]["finished_at"]


def test_approvals_are_appended_and_the_latest_wins(ledger):
    assert ledger.approval_for("lincoln-usd", "d1") is None
    first = ledger.record_approval("lincoln-usd", "d1", "ana", '{"users": {"deactivate": 120}}', run_id="r1")
    latest = ledger.record_approval("lincoln-usd", "d1", "ben", '{"users": {"deactivate": 120}}')
    ledger.record_approval("other-usd", "d1", "cy", "{}")
    assert ledger.approval_for("lincoln-usd", "d1") == latest
    assert latest.run_id == "" and latest.approved_at.endswith("+00:00") and latest.approved_at >= first.approved_at
    assert ledger.approvals("lincoln-usd") == [latest, first]
    assert ledger.approval_for("lincoln-usd", "d2") is None


def test_an_approval_must_name_who_approved(ledger):
    with pytest.raises(ValueError, match="lincoln-usd.*d1.*who approved"):
        ledger.record_approval("lincoln-usd", "d1", "  ", "{}")


def test_a_file_path_still_opens_a_sqlite_ledger(tmp_path):
    with SyncLedger(tmp_path / "home" / "ledger.db") as ledger:
        ledger.record_batch(CONTEXT, [change("create", "u1")], [("created", None)])
    assert (tmp_path / "home" / "ledger.db").exists()
    with SyncLedger(str(tmp_path / "home" / "ledger.db")) as reopened:
        assert reopened.load_state("lincoln-usd", "users")["sourcedId"].tolist() == ["u1"]
        journal = reopened._engine.connect().exec_driver_sql("PRAGMA journal_mode").scalar()
    assert journal == "wal"


# The tables as the first, SQLite-only release created them.
_PREVIOUS_SCHEMA = """
CREATE TABLE sync_state (district TEXT NOT NULL, entity TEXT NOT NULL, sourced_id TEXT NOT NULL,
    content_hash TEXT NOT NULL, active INTEGER NOT NULL, delivery_id TEXT NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (district, entity, sourced_id));
CREATE TABLE ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, run_id TEXT NOT NULL,
    district TEXT NOT NULL, delivery_id TEXT NOT NULL, archive_uri TEXT NOT NULL, source_file TEXT NOT NULL,
    source_line INTEGER NOT NULL, entity TEXT NOT NULL, sourced_id TEXT NOT NULL, operation TEXT NOT NULL,
    hash_before TEXT NOT NULL, hash_after TEXT NOT NULL, idempotency_key TEXT NOT NULL, lms_status TEXT NOT NULL,
    error TEXT);
INSERT INTO sync_state VALUES ('lincoln-usd', 'users', 'u0', 'h0', 1, 'd0', '2026-01-01T00:00:00+00:00');
INSERT INTO ledger VALUES (1, '2026-01-01T00:00:00+00:00', 'r0', 'lincoln-usd', 'd0', 'file:///a', 'users.csv',
    2, 'users', 'u0', 'create', '', 'h0', 'k0', 'created', NULL);
"""


def test_a_ledger_from_the_previous_release_gains_the_new_columns(tmp_path):
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(_PREVIOUS_SCHEMA)
    with SyncLedger(path) as ledger:
        assert ledger.load_state("lincoln-usd", "users").to_dict("records") == [
            {"sourcedId": "u0", "content_hash": "h0", "active": True, "school": ""}
        ]
        assert ledger.natural_keys("lincoln-usd", "users", ["u0"]) == {"u0": ""}
        ledger.record_batch(CONTEXT, [change("update", "u0", before="h0", after="h1")], [("updated", None)])
        assert [h["archive_sha256"] for h in ledger.history("lincoln-usd", "u0")] == ["ab" * 32, ""]
        assert ledger.load_state("lincoln-usd", "users")["school"].tolist() == ["s1"]
    with SyncLedger(path) as reopened:  # opening an upgraded ledger again changes nothing
        assert len(reopened.history("lincoln-usd", "u0")) == 2


# The one-row-per-record ledger of the release before the batch/entry split (same columns on both backends).
_WIDE_LEDGER = """
CREATE TABLE ledger ({id}, at TEXT NOT NULL, run_id TEXT NOT NULL, district TEXT NOT NULL,
    delivery_id TEXT NOT NULL, archive_uri TEXT NOT NULL, source_file TEXT NOT NULL, source_line INTEGER NOT NULL,
    entity TEXT NOT NULL, sourced_id TEXT NOT NULL, operation TEXT NOT NULL, hash_before TEXT NOT NULL,
    hash_after TEXT NOT NULL, idempotency_key TEXT NOT NULL, lms_status TEXT NOT NULL, error TEXT,
    archive_sha256 TEXT NOT NULL DEFAULT '')
"""
_WIDE_ROWS = [  # two batches of run r1 (one record in both), one of run r2; ids not in batch order
    (1, "2026-01-01T00:00:00+00:00", "r1", "lincoln-usd", "d1", "s3://a/users.csv", "users.csv", 2, "users", "u1", "create", "", "h1", "k1", "created", None, "aa"),
    (2, "2026-01-01T00:00:00+00:00", "r1", "lincoln-usd", "d1", "s3://a/users.csv", "users.csv", 3, "users", "u2", "create", "", "h2", "k1", "error", "bad role", "aa"),
    (3, "2026-01-01T00:00:01+00:00", "r1", "lincoln-usd", "d1", "s3://a/users.csv", "users.csv", 3, "users", "u2", "create", "", "h2", "k1.1", "created", None, "aa"),
    (4, "2026-01-02T00:00:00+00:00", "r2", "lincoln-usd", "d2", "s3://b/users.csv", "users.csv", 2, "users", "u1", "update", "h1", "h3", "k2", "updated", None, "bb"),
]


def test_a_wide_ledger_is_split_into_batches_and_entries_keeping_every_row(ledger_url):
    engine = sa.create_engine(ledger_url)
    identity = "id INTEGER PRIMARY KEY AUTOINCREMENT" if engine.dialect.name == "sqlite" else "id BIGSERIAL PRIMARY KEY"
    with engine.begin() as conn:
        conn.execute(sa.text(_WIDE_LEDGER.format(id=identity)))
        conn.execute(sa.text("INSERT INTO ledger VALUES (" + ", ".join(f":c{i}" for i in range(17)) + ")"),
                     [{f"c{i}": value for i, value in enumerate(row)} for row in _WIDE_ROWS])
    engine.dispose()
    with SyncLedger(ledger_url) as ledger:
        u2 = ledger.history("lincoln-usd", "u2")
        assert [(h["idempotency_key"], h["lms_status"], h["error"]) for h in u2] == [("k1.1", "created", None), ("k1", "error", "bad role")]
        u1 = ledger.history("lincoln-usd", "u1")
        assert [(h["run_id"], h["operation"], h["hash_before"], h["hash_after"], h["archive_sha256"]) for h in u1] == [
            ("r2", "update", "h1", "h3", "bb"), ("r1", "create", "", "h1", "aa")
        ]
        assert [(r["run_id"], r["counts"]) for r in ledger.runs("lincoln-usd")] == [
            ("r2", {"updated": 1}), ("r1", {"created": 2, "error": 1})
        ]
        ledger.record_batch(CONTEXT, [change("update", "u1", before="h3", after="h4")], [("updated", None)])
        with ledger._engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM ledger_batches")).scalar() == 4
            # The view keeps the old one-row-per-record shape for SQL readers.
            rows = conn.execute(sa.text("SELECT sourced_id, source_line, idempotency_key FROM ledger ORDER BY batch_id, position")).all()
        assert [tuple(row) for row in rows] == [("u1", 2, "k1"), ("u2", 3, "k1"), ("u2", 3, "k1.1"), ("u1", 2, "k2"), ("u1", 7, "k1")]
    with SyncLedger(ledger_url) as reopened:  # opening it again moves nothing twice
        assert len(reopened.history("lincoln-usd", "u1")) == 3


def test_the_password_in_a_ledger_url_never_shows(postgres_url):
    with_password = sa.make_url(postgres_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    with SyncLedger(with_password) as ledger:  # the test server trusts loopback, so any password logs in
        assert "s3cret-pw" not in repr(ledger) and "s3cret-pw" not in str(ledger) and "***" in repr(ledger)
    with pytest.raises(ValueError, match="not supported") as raised:
        SyncLedger("mysql://rostersync:s3cret-pw@db.example/ledger")
    assert "s3cret-pw" not in str(raised.value)


def test_a_bare_postgresql_url_uses_the_installed_driver(postgres_url):
    bare = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with SyncLedger(bare) as ledger:
        ledger.record_batch(CONTEXT, [change("create", "u1")], [("created", None)])
        assert ledger.url.drivername == "postgresql+psycopg"
        assert ledger.load_state("lincoln-usd", "users")["sourcedId"].tolist() == ["u1"]


def test_a_sqlite_state_read_in_several_chunks_is_whole(tmp_path, monkeypatch):
    """Large SQLite states are read chunk by chunk; the chunks join into one frame."""
    monkeypatch.setattr("rostersync_assets.connectors.ledger._SQLITE_CHUNK_ROWS", 2)
    with SyncLedger(tmp_path / "ledger.db") as ledger:
        ledger.record_batch(CONTEXT, [change("create", f"u{i}") for i in range(5)], [("created", None)] * 5)
        state = ledger.load_state("lincoln-usd", "users")
    assert sorted(state["sourcedId"]) == [f"u{i}" for i in range(5)] and state.index.tolist() == list(range(5))
    assert state["active"].all()


def test_the_ledger_resource_reads_its_url_from_the_environment_in_prod_and_masks_it(tmp_path, monkeypatch):
    home = RostersyncHome(tmp_path)
    local = build_resources("local", home)["ledger"]
    assert local.open().url.database == str(home.ledger_path)
    monkeypatch.setenv("ROSTERSYNC_LEDGER_URL", "postgresql://rostersync:s3cret-pw@db.internal/ledger")
    prod = build_resources("prod", home)["ledger"]
    assert repr(prod) == "LedgerResource(url=EnvVar('ROSTERSYNC_LEDGER_URL'))"
    resolved = LedgerResource(url="postgresql://rostersync:s3cret-pw@db.internal/ledger")
    assert "s3cret-pw" not in repr(resolved) and "s3cret-pw" not in str(resolved)


def test_state_values_are_escaped_in_the_streamed_query(ledger):
    """The state query inlines district and entity (see load_state): a quote must stay data."""
    tricky = BatchContext("r1", "o'neil-usd", "d1", "", "users", "k1")
    ledger.record_batch(tricky, [change("create", "u1")], [("created", None)])
    assert ledger.load_state("o'neil-usd", "users")["sourcedId"].tolist() == ["u1"]
    assert ledger.load_state("x' OR '1'='1", "users").empty
