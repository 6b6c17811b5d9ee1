"""The sandbox LMS honours the LMS contract (docs/lms-api.md), checked over HTTP on loopback."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from rostersync_assets.cli import build_parser
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.sandbox.fault_flags import faults_from_arguments
from rostersync_assets.sandbox.lms_app import SandboxFaults, SandboxLmsStore, create_app
from rostersync_assets_tests.fixtures.lms import SandboxLms, SandboxLmsFactory

TENANT = "district-042"
OPENAPI = Path(__file__).resolve().parents[1] / "docs" / "lms-openapi.yaml"
# Values that must never come back in an error message (they stand for student personal data).
SECRET_NAME = "Zyxwvutsrq"
SECRET_PASSWORD = "hunter2-Qwerty"


def batch(
    lms: SandboxLms,
    operations: list[dict[str, Any]],
    key: str,
    *,
    entity: str = "users",
    tenant: str = TENANT,
    token: str | None = None,
) -> requests.Response:
    return requests.post(
        f"{lms.url}/api/v1/tenants/{tenant}/{entity}/batch",
        json={"operations": operations},
        headers={"Authorization": f"Bearer {token or lms.token}", "Idempotency-Key": key},
        timeout=10,
    )


def list_page(lms: SandboxLms, entity: str = "users", **params: Any) -> requests.Response:
    return requests.get(
        f"{lms.url}/api/v1/tenants/{TENANT}/{entity}",
        params=params,
        headers={"Authorization": f"Bearer {lms.token}"},
        timeout=10,
    )


def user(sourced_id: str, given_name: str = "Ada") -> dict[str, Any]:
    record = {"sourcedId": sourced_id, "role": "student", "givenName": given_name}
    return {"op": "upsert", "sourcedId": sourced_id, "record": record}


def deactivate(sourced_id: str) -> dict[str, Any]:
    return {"op": "deactivate", "sourcedId": sourced_id}


def statuses(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return statuses_of(response.json())


def statuses_of(answer: dict[str, Any]) -> list[str]:
    return [result["status"] for result in answer["results"]]


def test_upsert_and_deactivate_follow_the_contract(sandbox_lms: SandboxLms) -> None:
    steps = [
        ([user("u1"), user("u2")], ["created", "created"]),
        ([user("u1"), user("u2", "Grace")], ["unchanged", "updated"]),
        (
            [deactivate("u1"), deactivate("u1"), deactivate("nobody")],
            ["deactivated", "unchanged", "unchanged"],
        ),
        ([user("u1")], ["updated"]),  # identical record, but inactive: reactivated
    ]
    for number, (operations, expected) in enumerate(steps):
        assert statuses(batch(sandbox_lms, operations, f"k{number}")) == expected

    assert sandbox_lms.store.active_records(TENANT, "users") == {
        "u1": {"sourcedId": "u1", "role": "student", "givenName": "Ada"},
        "u2": {"sourcedId": "u2", "role": "student", "givenName": "Grace"},
    }


def test_deactivated_records_are_kept_and_listed_inactive(sandbox_lms: SandboxLms) -> None:
    statuses(batch(sandbox_lms, [user("u1"), user("u2")], "k1"))
    statuses(batch(sandbox_lms, [deactivate("u2")], "k2"))

    items = list_page(sandbox_lms).json()["items"]

    assert [(item["sourcedId"], item["active"]) for item in items] == [("u1", True), ("u2", False)]
    assert items[1]["givenName"] == "Ada"
    assert sandbox_lms.store.active_records(TENANT, "users").keys() == {"u1"}


def test_replayed_key_returns_the_stored_answer_and_applies_once(sandbox_lms: SandboxLms) -> None:
    first = batch(sandbox_lms, [user("u1"), deactivate("u9")], "delivery-1:users:0")
    again = batch(sandbox_lms, [user("u1"), deactivate("u9")], "delivery-1:users:0")

    # Applied twice, the second answer would say "unchanged"; a replay repeats "created".
    assert again.json() == first.json() == {
        "results": [
            {"sourcedId": "u1", "status": "created"},
            {"sourcedId": "u9", "status": "unchanged"},
        ]
    }
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    [row] = sandbox_lms.store.idempotency_log()
    assert (row.key, row.tenant, row.entity) == ("delivery-1:users:0", TENANT, "users")
    assert row.times_seen == 2
    assert row.response == first.json()


def test_concurrent_retries_of_one_key_apply_it_once(sandbox_lms: SandboxLms) -> None:
    operations = [user(f"u{n}") for n in range(50)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: batch(sandbox_lms, operations, "k1").json(), range(8)))

    assert all(answer == answers[0] for answer in answers)
    assert set(statuses_of(answers[0])) == {"created"}
    assert [row.times_seen for row in sandbox_lms.store.idempotency_log()] == [8]


def test_reusing_a_key_for_another_request_is_422(sandbox_lms: SandboxLms) -> None:
    statuses(batch(sandbox_lms, [user("u1")], "k1"))

    other_body = batch(sandbox_lms, [user("u1", "Grace")], "k1")
    other_entity = batch(sandbox_lms, [user("u1")], "k1", entity="orgs")

    assert other_body.status_code == other_entity.status_code == 422
    assert "Idempotency-Key" in other_body.json()["error"]
    assert sandbox_lms.store.active_records(TENANT, "users")["u1"]["givenName"] == "Ada"
    assert [row.times_seen for row in sandbox_lms.store.idempotency_log()] == [1]


def test_key_order_and_whitespace_change_neither_the_body_nor_the_record(sandbox_lms: SandboxLms) -> None:
    reordered = {"record": {"givenName": "Ada", "sourcedId": "u1", "role": "student"}, "sourcedId": "u1", "op": "upsert"}
    spaced = b'{ "operations" : [ {"sourcedId": "u1", "op": "upsert", "record": {"role": "student", "givenName": "Ada", "sourcedId": "u1"}} ] }'
    first = batch(sandbox_lms, [user("u1")], "k1")
    retry = requests.post(
        f"{sandbox_lms.url}/api/v1/tenants/{TENANT}/users/batch",
        data=spaced,
        headers={"Authorization": f"Bearer {sandbox_lms.token}", "Idempotency-Key": "k1", "Content-Type": "application/json"},
        timeout=10,
    )
    resent = batch(sandbox_lms, [reordered], "k2")

    assert statuses(first) == ["created"]
    assert retry.headers["Idempotent-Replayed"] == "true" and retry.json() == first.json()
    assert statuses(resent) == ["unchanged"]


def test_records_stored_in_another_key_order_are_compared_by_content(tmp_path: Path) -> None:
    # Rows written before records were stored as canonical JSON keep the order they were sent in.
    store = SandboxLmsStore(tmp_path / "lms.sqlite3")
    store.apply_batch(TENANT, "users", [user("u1"), user("u2")], "k1")
    with sqlite3.connect(tmp_path / "lms.sqlite3") as conn:
        conn.execute(
            "UPDATE records SET record_json=? WHERE sourced_id='u1'",
            ('{"sourcedId":"u1","role":"student","givenName":"Ada"}',),
        )

    outcome = store.apply_batch(TENANT, "users", [user("u1"), user("u2", "Grace")], "k2")

    assert statuses_of(outcome.response) == ["unchanged", "updated"]


def test_keys_and_records_are_separate_per_tenant(sandbox_lms: SandboxLms) -> None:
    assert statuses(batch(sandbox_lms, [user("u1")], "k1")) == ["created"]
    other_tenant = batch(sandbox_lms, [user("u1", "Grace")], "k1", tenant="district-007")
    assert statuses(other_tenant) == ["created"]

    assert sandbox_lms.store.active_records(TENANT, "users")["u1"]["givenName"] == "Ada"
    assert sandbox_lms.store.active_records("district-007", "users")["u1"]["givenName"] == "Grace"


def test_invalid_operations_get_errors_that_do_not_echo_values(sandbox_lms: SandboxLms) -> None:
    operations = [
        {"op": "upsert", "sourcedId": "u1"},
        {"op": "upsert", "sourcedId": "", "record": {"givenName": SECRET_NAME}},
        {"op": "delete", "sourcedId": "u2"},
        {"op": "upsert", "sourcedId": "u3", "record": {"password": SECRET_PASSWORD}},
        {"op": "upsert", "sourcedId": "u4", "record": {"shoeSize": SECRET_NAME}},
        {"op": "upsert", "sourcedId": "u5", "record": {"givenName": 42}},
        {"op": "upsert", "sourcedId": "u6", "record": {"sourcedId": SECRET_NAME}},
        user("u7"),
    ]

    response = batch(sandbox_lms, operations, "k1")

    results = response.json()["results"]
    assert [r["status"] for r in results] == ["error"] * 7 + ["created"]
    assert [r["sourcedId"] for r in results] == ["u1", "", "u2", "u3", "u4", "u5", "u6", "u7"]
    assert "password" in results[3]["error"] and "shoeSize" in results[4]["error"]
    assert SECRET_NAME not in response.text and SECRET_PASSWORD not in response.text
    assert sandbox_lms.store.active_records(TENANT, "users").keys() == {"u7"}


def test_requests_without_the_token_are_401(sandbox_lms: SandboxLms) -> None:
    url = f"{sandbox_lms.url}/api/v1/tenants/{TENANT}/users"
    for authorization in (None, "Bearer wrong-token", f"Basic {sandbox_lms.token}"):
        headers = {"Idempotency-Key": "k1"}
        if authorization is not None:
            headers["Authorization"] = authorization
        body = {"operations": [user("u1")]}

        posted = requests.post(f"{url}/batch", json=body, headers=headers, timeout=10)
        listed = requests.get(url, headers=headers, timeout=10)

        assert posted.status_code == listed.status_code == 401, authorization
        assert posted.json() == {"error": "missing or invalid bearer token"}
        assert posted.headers["WWW-Authenticate"] == "Bearer"
    assert sandbox_lms.store.idempotency_log() == []


def test_health_needs_no_token(sandbox_lms: SandboxLms) -> None:
    response = requests.get(f"{sandbox_lms.url}/api/v1/health", timeout=10)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_unknown_entities_and_paths_are_json_404(sandbox_lms: SandboxLms) -> None:
    assert batch(sandbox_lms, [user("u1")], "k1", entity="students").status_code == 404
    assert list_page(sandbox_lms, entity="students").status_code == 404
    missing = requests.get(f"{sandbox_lms.url}/api/v2/anything", timeout=10)
    assert (missing.status_code, set(missing.json())) == (404, {"error"})
    wrong_method = requests.delete(f"{sandbox_lms.url}/api/v1/health", timeout=10)
    assert (wrong_method.status_code, set(wrong_method.json())) == (405, {"error"})


def test_malformed_batches_are_400_and_apply_nothing(sandbox_lms: SandboxLms) -> None:
    url = f"{sandbox_lms.url}/api/v1/tenants/{TENANT}/users/batch"
    auth = {"Authorization": f"Bearer {sandbox_lms.token}"}
    keyed = auth | {"Idempotency-Key": "k1"}
    too_many = [user(f"u{i}") for i in range(1001)]
    bad = [
        requests.post(url, json={"operations": [user("u1")]}, headers=auth, timeout=10),
        requests.post(url, data=b"{not json", headers=keyed, timeout=10),
        requests.post(url, json={"operations": "u1"}, headers=keyed, timeout=10),
        requests.post(url, json={"operations": too_many}, headers=keyed, timeout=10),
    ]
    assert [response.status_code for response in bad] == [400] * 4
    assert "Idempotency-Key" in bad[0].json()["error"]
    assert sandbox_lms.store.idempotency_log() == []


def test_pagination_returns_every_record_once_in_order(sandbox_lms: SandboxLms) -> None:
    ids = [f"u{n:03d}" for n in range(23)]
    sandbox_lms.store.apply_batch(TENANT, "users", [user(i) for i in ids], "seed")

    seen, cursor, pages = [], None, 0
    while True:
        page = list_page(sandbox_lms, limit=5, **({"cursor": cursor} if cursor else {})).json()
        seen += [item["sourcedId"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == ids
    assert pages == 5
    assert len(list_page(sandbox_lms).json()["items"]) == 23  # default limit 100


def test_bad_limit_or_cursor_is_400(sandbox_lms: SandboxLms) -> None:
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"cursor": "%"}, {"cursor": ""}):
        response = list_page(sandbox_lms, **params)

        assert response.status_code == 400, params
        assert set(response.json()) == {"error"}


def test_faults_answer_503_then_429_before_applying(sandbox_lms_factory: SandboxLmsFactory) -> None:
    faults = SandboxFaults(fail_first_batches=1, throttle_first_batches=1, retry_after_s=7)
    lms = sandbox_lms_factory(faults=faults)

    answers = [batch(lms, [user("u1")], "k1") for _ in range(3)]

    assert [a.status_code for a in answers] == [503, 429, 200]
    assert answers[1].headers["Retry-After"] == "7"
    assert statuses(answers[2]) == ["created"]
    assert [row.times_seen for row in lms.store.idempotency_log()] == [1]


def test_openapi_documents_every_route_the_app_serves(tmp_path: Path) -> None:
    document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    documented = {
        (path, method.upper())
        for path, operations in document["paths"].items()
        for method in operations
        if method != "parameters"
    }
    app = create_app(tmp_path / "lms.sqlite3", "token")
    served = {
        (route.path, method) for route in app.routes for method in route.methods if method != "HEAD"
    }

    assert document["openapi"].startswith("3.0")
    assert served == documented
    entity = document["components"]["parameters"]["Entity"]["schema"]["enum"]
    assert entity == list(ENTITIES)


def outcome(lms: SandboxLms, key: str) -> str:
    """The answer's status code, or "dropped" when the server closed the connection without one."""
    try:
        return str(batch(lms, [user(f"user-{key}")], key).status_code)
    except requests.ConnectionError:
        return "dropped"


def test_share_faults_are_seeded_reproducible_and_apply_only_what_they_say(sandbox_lms_factory: SandboxLmsFactory) -> None:
    def faults() -> SandboxFaults:
        return SandboxFaults(error_share=0.2, throttle_share=0.2, drop_before_share=0.2, drop_after_share=0.2, retry_after_s=0, seed=5)

    first, second = sandbox_lms_factory(faults=faults()), sandbox_lms_factory(faults=faults())
    keys = [f"k{n}" for n in range(40)]

    outcomes = [outcome(first, key) for key in keys]

    assert outcomes == [outcome(second, key) for key in keys]  # same seed, same answers
    assert set(outcomes) == {"200", "503", "429", "dropped"}
    applied = {row.key for row in first.store.idempotency_log()}
    dropped_after = applied - {key for key, seen in zip(keys, outcomes) if seen == "200"}
    assert dropped_after and all(outcomes[keys.index(key)] == "dropped" for key in dropped_after)
    assert first.faults.injected["drop after applying"] == len(dropped_after)
    assert first.faults.injected["drop before applying"] == outcomes.count("dropped") - len(dropped_after)
    assert not any(outcomes[keys.index(key)] in ("503", "429") for key in applied)


def test_a_retry_of_the_same_key_gets_a_fresh_draw(sandbox_lms_factory: SandboxLmsFactory) -> None:
    lms = sandbox_lms_factory(faults=SandboxFaults(error_share=0.5, seed=1))

    answers = [outcome(lms, "k1") for _ in range(12)]

    assert set(answers) == {"200", "503"}
    assert [row.times_seen for row in lms.store.idempotency_log()] == [answers.count("200")]


def test_rejected_records_are_errors_in_a_successful_batch_until_the_fault_is_lifted(sandbox_lms_factory: SandboxLmsFactory) -> None:
    lms = sandbox_lms_factory(faults=SandboxFaults(reject_ids=frozenset({"u2"})))

    rejected = batch(lms, [user("u1"), user("u2"), user("u3")], "k1")
    lms.faults.reject_ids = frozenset()  # switched off on the running server
    replayed = batch(lms, [user("u1"), user("u2"), user("u3")], "k1")
    lifted = batch(lms, [user("u2")], "k2")

    assert statuses(rejected) == ["created", "error", "created"] == statuses(replayed)
    assert rejected.json()["results"][1]["error"] == "rejected by the LMS (injected fault)"
    assert statuses(lifted) == ["created"]
    assert lms.store.active_records(TENANT, "users").keys() == {"u1", "u2", "u3"}


def test_a_share_of_records_is_rejected_by_sourced_id(sandbox_lms_factory: SandboxLmsFactory) -> None:
    lms = sandbox_lms_factory(faults=SandboxFaults(reject_share=0.3, seed=2))

    first = statuses(batch(lms, [user(f"u{n}") for n in range(100)], "k1"))
    again = statuses(batch(lms, [user(f"u{n}") for n in range(100)], "k2"))

    assert 15 < first.count("error") < 45
    assert [s == "error" for s in first] == [s == "error" for s in again]  # the same records, every time


def test_fault_shares_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shares"):
        SandboxFaults(error_share=0.6, drop_after_share=0.6)
    with pytest.raises(ValueError, match="shares"):
        SandboxFaults(reject_share=-0.1)


def test_the_cli_flags_build_the_faults() -> None:
    args = build_parser().parse_args(
        ["sandbox", "lms", "--token", "t", "--latency", "0.2", "--error-share", "0.1", "--throttle-share", "0.05",
         "--retry-after", "3", "--drop-before-share", "0.02", "--drop-after-share", "0.03", "--stall-share", "0.01",
         "--stall", "5", "--reject-share", "0.01", "--reject-id", "u1", "--reject-id", "u2", "--fault-seed", "9"]
    )
    assert faults_from_arguments(args) == SandboxFaults(
        latency_s=0.2, error_share=0.1, throttle_share=0.05, retry_after_s=3, drop_before_share=0.02,
        drop_after_share=0.03, stall_share=0.01, stall_s=5.0, reject_share=0.01, reject_ids=frozenset({"u1", "u2"}), seed=9,
    )
    assert faults_from_arguments(build_parser().parse_args(["sandbox", "lms"])) == SandboxFaults()
