"""The OneRoster REST client, staging and reader against the local provider over real HTTP.

Every test pulls a small generated district from sandbox/oneroster_provider.py on loopback; the only
thing replaced is the client's `sleep` (recorded instead of waited, so backoff is checked, not endured).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime

import pytest

from rostersync_assets.connectors import oauth1
from rostersync_assets.connectors.oneroster_rest import (
    OAuth1Credentials,
    OAuth2ClientCredentials,
    OneRosterRestClient,
    RestPullError,
)
from rostersync_assets.connectors.rest_delivery import delta_since, stage_rest_delivery
from rostersync_assets.oneroster.formats import read_delivery
from rostersync_assets.oneroster.validate import validate_package
from rostersync_assets.sandbox.generator import DistrictRoster, generate_district
from rostersync_assets.sandbox.oneroster_provider import OneRosterProvider, running_provider

LATER = "2026-09-02T03:00:00.000Z"


@pytest.fixture(scope="module")
def roster() -> DistrictRoster:
    return generate_district(students=60, seed=11, district="rest-district")


Serve = Callable[..., tuple[OneRosterProvider, str]]


@pytest.fixture
def serve(roster: DistrictRoster) -> Iterator[Serve]:
    """Starts providers on demand with the given ProviderSettings fields."""
    with ExitStack() as stack:

        def start(**settings: object) -> tuple[OneRosterProvider, str]:
            provider = OneRosterProvider.from_tables(roster.tables, **settings)
            return provider, stack.enter_context(running_provider(provider))

        yield start


def oauth2(provider: OneRosterProvider, url: str) -> OAuth2ClientCredentials:
    settings = provider.settings
    return OAuth2ClientCredentials(f"{url}/oauth/token", settings.client_id, settings.client_secret, "roster-core.readonly")


def oauth1_credentials(provider: OneRosterProvider) -> OAuth1Credentials:
    return OAuth1Credentials(provider.settings.consumer_key, provider.settings.consumer_secret)


def pulled_ids(client: OneRosterRestClient, endpoint: str, filter: str | None = None) -> list[str]:
    return [record["sourcedId"] for page in client.pages(endpoint, filter) for record in page.records]


def ids(roster: DistrictRoster, entity: str) -> list[str]:
    return list(roster.tables[entity]["sourcedId"])


def test_oauth2_link_pagination_reads_every_record_with_one_cached_token(serve, roster):
    provider, url = serve(pagination="link")
    client = OneRosterRestClient(url, "v1p2", oauth2(provider, url), page_size=25)
    for entity in ("users", "enrollments", "classes"):
        assert pulled_ids(client, entity) == ids(roster, entity), entity
    assert provider.tokens_issued == 1
    assert all("rostering/v1p2" in request for request in provider.requests)


def test_oauth2_token_is_fetched_again_after_the_provider_forgets_it(serve, roster):
    provider, url = serve(pagination="link")
    client = OneRosterRestClient(url, "v1p2", oauth2(provider, url), page_size=30)
    pages = client.pages("enrollments")
    first = next(pages)
    provider.revoke_tokens()  # the next page answers 401
    rest = [record["sourcedId"] for page in pages for record in page.records]
    assert [r["sourcedId"] for r in first.records] + rest == ids(roster, "enrollments")
    assert provider.tokens_issued == 2


def test_oauth1_hmac_sha256_with_offset_pagination(serve, roster):
    provider, url = serve(pagination="offset")
    client = OneRosterRestClient(url, "v1p1", oauth1_credentials(provider), page_size=40)
    assert pulled_ids(client, "users") == ids(roster, "users")
    assert pulled_ids(client, "enrollments") == ids(roster, "enrollments")
    assert all("/ims/oneroster/v1p1/" in request for request in provider.requests)


@pytest.mark.parametrize("scheme", ["oauth1", "oauth2"])
def test_a_netrc_entry_for_the_provider_host_does_not_replace_the_credentials(serve, roster, scheme, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password other-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))  # requests reads it for requests that carry no auth of their own
    provider, url = serve()
    credentials = oauth1_credentials(provider) if scheme == "oauth1" else oauth2(provider, url)
    client = OneRosterRestClient(url, "v1p2", credentials, page_size=50)
    assert pulled_ids(client, "users") == ids(roster, "users")


def test_the_base_path_is_configurable(serve, roster):
    provider, url = serve(mount="/district/42")
    client = OneRosterRestClient(url, "v1p1", oauth1_credentials(provider), base_path="/district/42/ims/oneroster/v1p1")
    assert pulled_ids(client, "orgs") == ids(roster, "orgs")
    default = OneRosterRestClient(url, "v1p1", oauth1_credentials(provider), max_attempts=1)
    with pytest.raises(RestPullError, match="orgs: .*/ims/oneroster/v1p1/orgs.* answered 404"):
        pulled_ids(default, "orgs")


def test_wrong_secrets_are_refused_and_never_shown(serve):
    provider, url = serve()
    for version, credentials in (
        ("v1p1", OAuth1Credentials(provider.settings.consumer_key, "not-the-secret-1")),
        ("v1p2", OAuth2ClientCredentials(f"{url}/oauth/token", provider.settings.client_id, "not-the-secret-2")),
    ):
        client = OneRosterRestClient(url, version, credentials, max_attempts=1)
        with pytest.raises(RestPullError) as failure:
            pulled_ids(client, "orgs")
        assert "not-the-secret" not in str(failure.value) + repr(client) + repr(credentials)
        assert "401" in str(failure.value)


@pytest.mark.parametrize("send_total", [True, False])
def test_a_provider_capping_limit_is_read_to_the_end_by_its_real_page_size(serve, roster, send_total):
    provider, url = serve(pagination="offset", max_limit=50, send_total=send_total)
    client = OneRosterRestClient(url, "v1p1", oauth1_credentials(provider), page_size=500)
    assert pulled_ids(client, "enrollments") == ids(roster, "enrollments")
    enrollments = len(ids(roster, "enrollments"))
    asked = [r for r in provider.requests if "/enrollments" in r]
    # Without a total the page after the first short one is the probe that reveals the cap; an empty
    # page ends the pull only when the last page happens to be full.
    assert len(asked) == math.ceil(enrollments / 50) + (0 if send_total else enrollments % 50 == 0)
    assert all("limit=50" in r for r in asked[1:])
    if send_total:
        assert client.stats.capped_limits == {"enrollments": 50}


def test_link_pagination_through_a_capped_limit(serve, roster):
    provider, url = serve(pagination="link", max_limit=20)
    client = OneRosterRestClient(url, "v1p1", oauth1_credentials(provider), page_size=100)
    assert pulled_ids(client, "users") == ids(roster, "users")


def test_a_total_the_pages_never_reach_is_an_error_not_a_silent_stop(serve):
    provider, url = serve(pagination="offset")
    provider.faults.overstate_total = 3
    client = OneRosterRestClient(url, "v1p1", oauth1_credentials(provider), page_size=25)
    with pytest.raises(RestPullError, match=r"users: the provider reported \d+ records .* refusing an incomplete pull"):
        pulled_ids(client, "users")


def test_throttling_and_server_errors_are_retried_honouring_retry_after(serve, roster):
    provider, url = serve(pagination="link")
    provider.faults.queue[:] = [429, 503, 500]
    provider.faults.retry_after_s = 7
    slept: list[float] = []
    client = OneRosterRestClient(
        url, "v1p1", oauth1_credentials(provider), page_size=50, backoff_base_s=0.25, sleep=slept.append
    )
    assert pulled_ids(client, "users") == ids(roster, "users")
    assert slept == [7.0, 0.5, 1.0]  # Retry-After, then exponential backoff from the 2nd attempt
    assert client.stats.retries == 3


def test_a_provider_that_keeps_failing_fails_the_pull_naming_the_endpoint(serve):
    provider, url = serve()
    provider.faults.queue[:] = [503] * 3
    client = OneRosterRestClient(url, "v1p1", oauth1_credentials(provider), max_attempts=3, sleep=lambda s: None)
    with pytest.raises(RestPullError, match=r"classes: .*/classes\?.* answered 503 after 3 attempts"):
        pulled_ids(client, "classes")


def test_delta_filter_pulls_only_records_changed_since(serve, roster, tmp_path):
    provider, url = serve(pagination="link")
    changed = set(ids(roster, "users")[:3])
    provider.touch("users", changed, LATER)
    provider.touch("enrollments", {ids(roster, "enrollments")[0]}, LATER, status="tobedeleted")
    client = OneRosterRestClient(url, "v1p1", oauth1_credentials(provider))
    since = datetime(2026, 9, 2, 1, 0, tzinfo=UTC)
    staged = stage_rest_delivery(client, district="rest-district", source="test", staging_root=tmp_path, since=since)
    files = {f.name: f.path.read_bytes() for f in staged.files}
    pull = json.loads(files["rest-pull.json"])
    assert pull["mode"] == "delta"
    assert pull["filter"] == "dateLastModified>'2026-09-02T01:00:00.000Z'"
    assert pull["endpoints"]["users"]["records"] == 3
    assert any("filter=dateLastModified%3E%272026-09-02T01%3A00%3A00.000Z%27" in r for r in provider.requests)
    package = read_delivery(files)
    assert set(package.modes.values()) == {"delta"}
    assert set(package.tables["users"]["sourcedId"]) == changed
    assert list(package.tables["enrollments"]["status"]) == ["tobedeleted"]
    assert len(package.tables["orgs"]) == 0


def test_staged_pull_is_a_delivery_read_into_the_csv_tables(serve, roster, tmp_path):
    provider, url = serve(pagination="link", max_limit=40)
    for version, credentials in (("v1p1", oauth1_credentials(provider)), ("v1p2", oauth2(provider, url))):
        client = OneRosterRestClient(url, version, credentials, page_size=100)
        staged = stage_rest_delivery(client, district="rest-district", source="test", staging_root=tmp_path / version)
        names = [f.name for f in staged.files]
        assert "users-page-00001.json" in names and "rest-pull.json" in names
        assert staged.delivery_id.startswith(staged.delivered_at.strftime("%Y%m%dT%H%M%SZ-"))
        report = validate_package(read_delivery({f.name: f.path.read_bytes() for f in staged.files}))
        assert report.accepted, version
        for entity, expected in roster.tables.items():
            got = report.tables[entity][list(expected.columns)].reset_index(drop=True)
            assert got.equals(expected.reset_index(drop=True)), (version, entity)


def test_a_finding_names_the_record_and_the_pull_manifest_locates_its_page(serve, roster, tmp_path):
    provider, url = serve(pagination="link", max_limit=20)
    bad = ids(roster, "users")[30]
    provider.touch("users", {bad}, LATER, role="wizard")
    client = OneRosterRestClient(url, "v1p1", oauth1_credentials(provider), page_size=25)
    staged = stage_rest_delivery(client, district="rest-district", source="test", staging_root=tmp_path)
    files = {f.name: f.path.read_bytes() for f in staged.files}
    report = validate_package(read_delivery(files))
    found = [d for d in report.diagnostics if d.column == "role" and d.value == "wizard"]
    assert [(d.file, d.line, d.rule) for d in found] == [("users.csv", 32, "value.enum")]  # the 31st user
    users = json.loads(files["rest-pull.json"])["endpoints"]["users"]
    assert users["page_records"][:2] == [20, 20] and users["files"][1] == "users-page-00002.json"
    assert json.loads(files["users-page-00002.json"])["users"][10]["sourcedId"] == bad


def test_optional_demographics_missing_is_left_out(serve, tmp_path):
    provider, url = serve(serve_demographics=False)
    client = OneRosterRestClient(url, "v1p1", oauth1_credentials(provider))
    staged = stage_rest_delivery(client, district="rest-district", source="test", staging_root=tmp_path)
    package = read_delivery({f.name: f.path.read_bytes() for f in staged.files})
    assert package.modes["demographics"] == "absent" and package.modes["users"] == "bulk"


def test_a_failed_pull_stages_nothing(serve, tmp_path):
    provider, url = serve()
    provider.faults.queue[:] = [500] * 10
    client = OneRosterRestClient(url, "v1p1", oauth1_credentials(provider), max_attempts=2, sleep=lambda s: None)
    with pytest.raises(RestPullError):
        stage_rest_delivery(client, district="rest-district", source="test", staging_root=tmp_path)
    assert list((tmp_path / "rest-district").iterdir()) == []


def test_delta_since_is_the_last_fully_acknowledged_pull():
    runs = [
        {"delivery_id": "20260903T020000Z-aaaaaaaaaaaa", "counts": {"created": 3, "failed": 1}},
        {"delivery_id": "20260902T020000Z-bbbbbbbbbbbb", "counts": {"updated": 2, "unchanged": 1}},
    ]
    assert delta_since(runs) == datetime(2026, 9, 2, 2, 0, tzinfo=UTC)
    assert delta_since(runs[:1]) is None


def test_oauth1_base_string_follows_rfc_5849():
    """RFC 5849 §3.4.1.1's worked example (independent of how this repository signs)."""
    params = [
        ("b5", "=%3D"), ("a3", "a"), ("c@", ""), ("a2", "r b"), ("c2", ""), ("a3", "2 q"),
        ("oauth_consumer_key", "9djdj82h48djs9d2"), ("oauth_token", "kkk9d7dh3k39sjv7"),
        ("oauth_signature_method", "HMAC-SHA1"), ("oauth_timestamp", "137131201"), ("oauth_nonce", "7d8f3e4a"),
    ]
    assert oauth1.base_string("POST", "http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b", params) == (
        "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D"
        "%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_method%3DHMAC-SHA1"
        "%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7"
    )
    assert oauth1.base_string_uri("HTTP://EXAMPLE.COM:80/r%20v/X?id=123") == "http://example.com/r%20v/X"
    assert oauth1.base_string_uri("https://www.example.net:8080/?q=1") == "https://www.example.net:8080/"


def test_a_damaged_page_rejects_the_pull_naming_the_page(serve, tmp_path):
    provider, url = serve()
    client = OneRosterRestClient(url, "v1p1", oauth1_credentials(provider), page_size=50)
    staged = stage_rest_delivery(client, district="rest-district", source="test", staging_root=tmp_path)
    files = {f.name: f.path.read_bytes() for f in staged.files}
    files["users-page-00002.json"] = b'{"users": {"not": "a list"}}'
    report = validate_package(read_delivery(files))
    assert not report.accepted
    assert [(d.severity, d.rule, d.file) for d in report.diagnostics if d.file == "users-page-00002.json"] == [
        ("fatal", "file.malformed", "users-page-00002.json")
    ]
