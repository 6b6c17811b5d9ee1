"""LmsClient against the sandbox LMS over real HTTP: results, pagination, retries and failures."""

from __future__ import annotations

import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rostersync_assets.connectors.lms_client import LmsClient, LmsError, LmsOperation, LmsResult, batch_body
from rostersync_assets.sandbox.lms_app import SandboxFaults
from rostersync_assets_tests.fixtures.lms import SandboxLms, SandboxLmsFactory

TENANT = "district-042"
SECRET_NAME = "Zyxwvutsrq"  # stands for student personal data: must never reach messages or logs


class RecordedSleep:
    """A `sleep` that only remembers the delays, so retry tests take no wall-clock time."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def client_for(lms: SandboxLms, sleep: RecordedSleep | None = None, **options: float) -> LmsClient:
    return LmsClient(lms.url, lms.token, sleep=sleep or RecordedSleep(), **options)


def times_seen(lms: SandboxLms) -> list[int]:
    return [row.times_seen for row in lms.store.idempotency_log()]


def upsert(sourced_id: str, given_name: str = SECRET_NAME) -> LmsOperation:
    record = {"sourcedId": sourced_id, "role": "student", "givenName": given_name}
    return LmsOperation("upsert", sourced_id, record)


def test_send_batch_returns_one_result_per_operation(sandbox_lms: SandboxLms) -> None:
    with client_for(sandbox_lms) as client:
        first = client.send_batch(TENANT, "users", [upsert("u1"), upsert("u2")], "d1:users:0")
        second = client.send_batch(
            TENANT,
            "users",
            [
                upsert("u1"),
                upsert("u2", "Grace"),
                LmsOperation("deactivate", "u1"),
                LmsOperation("upsert", "u3"),
            ],
            "d2:users:0",
        )
        third = client.send_batch(TENANT, "users", [upsert("u1")], "d3:users:0")

    assert first == [LmsResult("u1", "created"), LmsResult("u2", "created")]
    assert [(r.sourced_id, r.status) for r in second] == [
        ("u1", "unchanged"),
        ("u2", "updated"),
        ("u1", "deactivated"),
        ("u3", "error"),
    ]
    assert second[3].error == "upsert requires a record object"
    assert third == [LmsResult("u1", "updated")]  # reactivated
    assert sandbox_lms.store.active_records(TENANT, "users").keys() == {"u1", "u2"}


def test_resending_a_batch_with_its_key_replays_it(sandbox_lms: SandboxLms) -> None:
    with client_for(sandbox_lms) as client:
        first = client.send_batch(TENANT, "users", [upsert("u1")], "d1:users:0")
        again = client.send_batch(TENANT, "users", [upsert("u1")], "d1:users:0")

    assert first == again == [LmsResult("u1", "created")]
    [row] = sandbox_lms.store.idempotency_log()
    assert row.times_seen == 2


def test_a_record_given_as_json_text_is_sent_as_is(sandbox_lms: SandboxLms) -> None:
    text = '{"sourcedId": "u1", "role": "student", "givenName": "%s"}' % SECRET_NAME
    with client_for(sandbox_lms) as client:
        first = client.send_batch(TENANT, "users", [LmsOperation("upsert", "u1", text)], "d1:users:0")
        # The same operation as a mapping is the same request: replayed, not a reused key (422).
        again = client.send_batch(TENANT, "users", [upsert("u1")], "d1:users:0")

    assert first == again == [LmsResult("u1", "created")] and again.replayed
    assert sandbox_lms.store.active_records(TENANT, "users") == {"u1": json.loads(text)}
    assert text.encode() in batch_body([LmsOperation("upsert", "u1", text)])
    with pytest.raises(ValueError, match="not a JSON object text"):  # refused before anything is sent
        batch_body([LmsOperation("upsert", "u1", "u1")])


def test_a_netrc_entry_for_the_lms_host_does_not_replace_the_bearer_token(sandbox_lms: SandboxLms, tmp_path, monkeypatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password other-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))  # requests reads it for hosts the session has no auth for
    with client_for(sandbox_lms) as client:
        results = client.send_batch(TENANT, "users", [upsert("u1")], "netrc:users:0")
    assert results == [LmsResult("u1", "created")]  # a Basic header from the netrc would be a 401


def test_iter_records_follows_cursors_over_several_pages(sandbox_lms: SandboxLms) -> None:
    ids = [f"u{n:04d}" for n in range(1500)]
    with client_for(sandbox_lms) as client:
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            client.send_batch(TENANT, "users", [upsert(i) for i in chunk], f"seed:{start}")
        client.send_batch(TENANT, "users", [LmsOperation("deactivate", "u0007")], "seed:deactivate")

        records = list(client.iter_records(TENANT, "users"))
        small_pages = [r["sourcedId"] for r in client.iter_records(TENANT, "users", page_size=100)]

    assert [r["sourcedId"] for r in records] == ids == small_pages
    assert [r["sourcedId"] for r in records if not r["active"]] == ["u0007"]
    assert records[0]["givenName"] == SECRET_NAME


def test_client_survives_server_errors_with_backoff(sandbox_lms_factory: SandboxLmsFactory) -> None:
    lms = sandbox_lms_factory(faults=SandboxFaults(fail_first_batches=2))
    sleep = RecordedSleep()

    with client_for(lms, sleep, backoff_base_s=0.5) as client:
        results = client.send_batch(TENANT, "users", [upsert("u1")], "d1:users:0")

    assert results == [LmsResult("u1", "created")]
    assert len(sleep.delays) == 2
    assert 0 <= sleep.delays[0] <= 0.5 and 0 <= sleep.delays[1] <= 1.0  # full jitter, doubling
    assert [(row.key, row.times_seen) for row in lms.store.idempotency_log()] == [("d1:users:0", 1)]


def test_client_waits_retry_after_when_throttled(sandbox_lms_factory: SandboxLmsFactory) -> None:
    lms = sandbox_lms_factory(faults=SandboxFaults(throttle_first_batches=2, retry_after_s=3))
    sleep = RecordedSleep()

    with client_for(lms, sleep) as client:
        results = client.send_batch(TENANT, "users", [upsert("u1")], "d1:users:0")

    assert results == [LmsResult("u1", "created")]
    assert sleep.delays == [3.0, 3.0]
    assert [row.times_seen for row in lms.store.idempotency_log()] == [1]


def test_client_gives_up_without_leaking_values_or_token(
    sandbox_lms_factory: SandboxLmsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    lms = sandbox_lms_factory(faults=SandboxFaults(fail_first_batches=100))
    sleep = RecordedSleep()

    with caplog.at_level(logging.DEBUG), client_for(lms, sleep, max_attempts=3) as client:
        with pytest.raises(LmsError) as raised:
            client.send_batch(TENANT, "users", [upsert("u1")], "d1:users:0")

    message = str(raised.value)
    for expected in (TENANT, "users", "HTTP 503", "d1:users:0", "3 attempt"):
        assert expected in message
    assert (raised.value.status, raised.value.attempts) == (503, 3)
    assert len(sleep.delays) == 2
    for text in (message, caplog.text):
        assert SECRET_NAME not in text and lms.token not in text
    assert "attempt 1/3" in caplog.text
    assert lms.store.idempotency_log() == []


def test_client_does_not_retry_other_4xx(sandbox_lms: SandboxLms) -> None:
    sleep = RecordedSleep()
    with client_for(sandbox_lms, sleep) as client:
        client.send_batch(TENANT, "users", [upsert("u1")], "k1")
        with pytest.raises(LmsError) as reused:
            client.send_batch(TENANT, "users", [upsert("u1", "Grace")], "k1")
        with pytest.raises(LmsError) as unknown:
            client.send_batch(TENANT, "students", [upsert("u1")], "k2")
    with LmsClient(sandbox_lms.url, "wrong-token") as stranger:
        with pytest.raises(LmsError) as unauthorized:
            list(stranger.iter_records(TENANT, "users"))

    assert (reused.value.status, reused.value.attempts) == (422, 1)
    assert (unknown.value.status, unauthorized.value.status) == (404, 401)
    assert "unknown entity" in str(unknown.value)
    assert sleep.delays == []


def test_client_retries_connection_errors() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        closed_port = sock.getsockname()[1]
    sleep = RecordedSleep()
    client = LmsClient(f"http://127.0.0.1:{closed_port}", "token", max_attempts=3, sleep=sleep)

    with client, pytest.raises(LmsError) as raised:
        client.send_batch(TENANT, "users", [upsert("u1")], "k1")

    assert raised.value.status is None
    assert "ConnectionError" in str(raised.value)
    assert len(sleep.delays) == 2


def test_timed_out_attempts_are_applied_once(sandbox_lms_factory: SandboxLmsFactory) -> None:
    """A timeout may hide an applied batch: the retry's same key turns it into a replay."""
    lms = sandbox_lms_factory(faults=SandboxFaults(latency_s=0.3))

    client = client_for(lms, timeout_s=0.1, max_attempts=2)
    with client, pytest.raises(LmsError) as raised:
        client.send_batch(TENANT, "users", [upsert("u1")], "k1")

    assert "ReadTimeout" in str(raised.value)
    deadline = time.monotonic() + 5  # the server finishes both requests after the client left
    while times_seen(lms) != [2] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert times_seen(lms) == [2]


def test_repr_hides_the_token_and_limits_are_checked_before_sending() -> None:
    client = LmsClient("http://127.0.0.1:9", "s3cret-token", sleep=RecordedSleep())

    assert repr(client) == "LmsClient(base_url='http://127.0.0.1:9')"
    with pytest.raises(ValueError, match="at most 1000"):
        client.send_batch(TENANT, "users", [upsert(f"u{n}") for n in range(1001)], "k1")
    with pytest.raises(ValueError, match="page_size"):
        next(client.iter_records(TENANT, "users", page_size=1001))
    client.close()


def test_results_say_whether_the_lms_replayed_its_answer(sandbox_lms: SandboxLms) -> None:
    with client_for(sandbox_lms) as client:
        first = client.send_batch(TENANT, "users", [upsert("u1")], "k1")
        again = client.send_batch(TENANT, "users", [upsert("u1")], "k1")

    assert (first.replayed, again.replayed) == (False, True)


def test_dropped_connections_are_retried_and_a_dropped_answer_is_replayed(sandbox_lms_factory: SandboxLmsFactory) -> None:
    lms = sandbox_lms_factory(faults=SandboxFaults(drop_before_share=0.3, drop_after_share=0.3, seed=4))
    sleep = RecordedSleep()

    with client_for(lms, sleep, max_attempts=20) as client:
        answers = [client.send_batch(TENANT, "users", [upsert(f"u{n}")], f"k{n}") for n in range(20)]

    assert [a[0].status for a in answers] == ["created"] * 20
    log = {row.key: row.times_seen for row in lms.store.idempotency_log()}
    assert len(log) == 20 and len(sleep.delays) == lms.faults.injected["drop before applying"] + lms.faults.injected["drop after applying"]
    assert lms.faults.injected["drop after applying"] > 0
    # an answer lost after the batch was applied: the retry is a replay, and says so
    assert {f"k{n}" for n, a in enumerate(answers) if a.replayed} == {key for key, seen in log.items() if seen > 1}


def test_one_client_serves_many_threads_each_on_its_own_session(sandbox_lms: SandboxLms) -> None:
    with client_for(sandbox_lms) as client, ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda n: client.send_batch(TENANT, "users", [upsert(f"u{n}")], f"k{n}"), range(16)))
        sessions = len(client._sessions)

    assert [a[0].status for a in answers] == ["created"] * 16
    assert 1 <= sessions <= 4 and client._sessions == []  # closed with the client


def test_values_an_lms_quotes_in_its_errors_are_redacted_before_anyone_keeps_them() -> None:
    """An LMS that breaks the contract and echoes an email and a birth date in a per-record error: the client
    hands on the error without them (it goes to the ledger, the run log and asset metadata)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class EchoingLms(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"results": [{
                "sourcedId": "u1", "status": "error",
                "error": "email 'pat.doe@lincoln.example.org' is taken; birthDate 2011-04-03 (4/3/2011) is invalid",
            }]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), EchoingLms) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with LmsClient(f"http://127.0.0.1:{server.server_address[1]}", "token") as client:
                [result] = client.send_batch(TENANT, "users", [upsert("u1")], "k1")
        finally:
            server.shutdown()

    assert result.status == "error"
    assert result.error == "email '<redacted>' is taken; birthDate <redacted> (<redacted>) is invalid"
