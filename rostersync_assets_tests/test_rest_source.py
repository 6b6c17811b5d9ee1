"""The registry's `rest:` source: exactly one source per district, secrets only by environment variable."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rostersync_assets.connectors.oneroster_rest import OAuth1Credentials, OAuth2ClientCredentials
from rostersync_assets.registry import DistrictRegistry, RegistryError

OAUTH2 = {
    "type": "oauth2", "token_url": "https://sis.example.org/oauth/token", "client_id": "rostersync",
    "client_secret_env": "OAK_CLIENT_SECRET", "scope": "roster-core.readonly",
}
SFTP = {
    "host": "sftp.example.org", "username": "oak", "remote_dir": "/outgoing",
    "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake",
    "password_env": "OAK_SFTP_PASSWORD",
}


def load(tmp_path: Path, district: dict) -> DistrictRegistry:
    path = tmp_path / "districts.yaml"
    path.write_text(yaml.safe_dump({"districts": [{"slug": "oak-usd", **district}]}))
    return DistrictRegistry.load(path)


def test_a_rest_district_round_trips_and_reads_its_secret_from_the_environment(tmp_path):
    rest = {"base_url": "https://sis.example.org", "version": "v1p2", "auth": OAUTH2, "page_size": 500, "delta": True}
    district = load(tmp_path, {"rest": rest}).get("oak-usd")
    assert district.sftp is None and district.rest is not None and district.rest.delta
    credentials = district.rest.credentials({"OAK_CLIENT_SECRET": "s3cret"})
    assert isinstance(credentials, OAuth2ClientCredentials) and credentials.client_secret == "s3cret"
    assert "s3cret" not in repr(credentials)
    DistrictRegistry({"oak-usd": district}).save(tmp_path / "saved.yaml")
    assert DistrictRegistry.load(tmp_path / "saved.yaml").get("oak-usd") == district

    oauth1 = {"type": "oauth1", "consumer_key": "key", "consumer_secret_env": "OAK_CONSUMER_SECRET"}
    v1p1 = load(tmp_path, {"rest": {"base_url": "https://sis.example.org", "version": "v1p1", "auth": oauth1}})
    assert isinstance(v1p1.get("oak-usd").rest.credentials({"OAK_CONSUMER_SECRET": "x"}), OAuth1Credentials)
    with pytest.raises(ValueError, match="OAK_CONSUMER_SECRET .* is not set"):
        v1p1.get("oak-usd").rest.credentials({})


@pytest.mark.parametrize(
    ("district", "message"),
    [
        ({}, "exactly one source, 'sftp' or 'rest'"),
        ({"sftp": SFTP, "rest": {"base_url": "https://x", "version": "v1p2", "auth": OAUTH2}}, "exactly one source"),
        ({"rest": {"base_url": "https://x", "version": "v2", "auth": OAUTH2}}, "rest: version must be one of v1p1, v1p2"),
        ({"rest": {"base_url": "ftp://x", "version": "v1p2", "auth": OAUTH2}}, "rest: base_url must be an http"),
        (
            {"rest": {"base_url": "https://x", "version": "v1p2", "auth": {**OAUTH2, "client_secret": "plain"}}},
            "rest: auth.client_secret holds a secret in the registry",
        ),
        ({"rest": {"base_url": "https://x", "version": "v1p1", "auth": {"type": "oauth1"}}}, "is missing consumer_key"),
        ({"rest": {"base_url": "https://x", "version": "v1p1", "auth": OAUTH2, "page_size": 0}}, "page_size"),
    ],
)
def test_unusable_rest_entries_are_refused_naming_the_district_and_field(tmp_path, district, message):
    with pytest.raises(RegistryError, match=f"district oak-usd: .*{message}"):
        load(tmp_path, district)
