"""Secret references: environment, AWS Secrets Manager (moto's server over HTTP) and the encrypted secrets file.

The registry holds only references; values are fetched at use time and never appear in the registry
file, the secrets file's bytes, reprs or error messages.
"""

from __future__ import annotations

import json
import secrets
import stat
from pathlib import Path

import boto3
import pytest
from cryptography.fernet import Fernet

from rostersync_assets.registry import District, DistrictRegistry, RegistryError, SftpSource
from rostersync_assets.secret_refs import (
    SECRETS_FILE_NAME,
    SecretRef,
    SecretsFile,
    SecretUnavailable,
    resolve,
)
from rostersync_assets_tests.fixtures.s3 import REGION

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3ad4eAYdx+eb5DN3vlfjVo+uL713eyAfVCQu6onXvp"


@pytest.fixture
def secret_value() -> str:
    return "pw-" + secrets.token_urlsafe(18)


@pytest.fixture
def secretsmanager(s3_server: str, monkeypatch: pytest.MonkeyPatch):
    """A boto3 Secrets Manager client on moto's server; boto3 clients made by the code under test
    find it through AWS_ENDPOINT_URL_SECRETS_MANAGER, as they would a VPC endpoint in production."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", s3_server)
    client = boto3.client("secretsmanager", region_name=REGION)
    yield client
    client.close()


def test_env_reference_resolves_and_a_missing_variable_is_named(secret_value: str) -> None:
    assert resolve(SecretRef("env", "LINCOLN_PW"), {"LINCOLN_PW": secret_value}) == secret_value
    with pytest.raises(SecretUnavailable, match="environment variable LINCOLN_PW is not set"):
        resolve(SecretRef("env", "LINCOLN_PW"), {})


def test_aws_reference_reads_the_secret_and_a_json_key(secretsmanager, secret_value: str) -> None:
    plain = secretsmanager.create_secret(Name="rostersync/lincoln/plain", SecretString=secret_value)["ARN"]
    secretsmanager.create_secret(Name="rostersync/lincoln/json", SecretString=json.dumps({"password": secret_value}))

    assert resolve(SecretRef("aws", plain)) == secret_value  # by ARN: the region comes from it
    assert resolve(SecretRef("aws", "rostersync/lincoln/json", "password")) == secret_value
    with pytest.raises(SecretUnavailable) as missing_key:
        resolve(SecretRef("aws", "rostersync/lincoln/json", "passwd"))
    assert "has no key passwd" in str(missing_key.value) and secret_value not in str(missing_key.value)
    with pytest.raises(SecretUnavailable, match="rostersync/nowhere cannot be read: ResourceNotFoundException"):
        resolve(SecretRef("aws", "rostersync/nowhere"))
    with pytest.raises(SecretUnavailable) as not_json:
        resolve(SecretRef("aws", plain, "password"))
    assert "not a JSON object" in str(not_json.value) and secret_value not in str(not_json.value)


def test_secrets_file_is_encrypted_private_and_needs_its_key(tmp_path: Path, secret_value: str) -> None:
    key = Fernet.generate_key()
    store = SecretsFile(tmp_path / SECRETS_FILE_NAME, key)
    store.put("sftp/lincoln-usd/password", secret_value)

    raw = (tmp_path / SECRETS_FILE_NAME).read_bytes()
    assert secret_value.encode() not in raw
    assert stat.S_IMODE((tmp_path / SECRETS_FILE_NAME).stat().st_mode) == 0o600
    env = {"ROSTERSYNC_HOME": str(tmp_path), "ROSTERSYNC_SECRETS_KEY": key.decode()}
    assert resolve(SecretRef("file", "sftp/lincoln-usd/password"), env) == secret_value

    with pytest.raises(SecretUnavailable, match="cannot be decrypted with ROSTERSYNC_SECRETS_KEY"):
        resolve(SecretRef("file", "sftp/lincoln-usd/password"), {**env, "ROSTERSYNC_SECRETS_KEY": Fernet.generate_key().decode()})
    with pytest.raises(SecretUnavailable, match="ROSTERSYNC_SECRETS_KEY is not set"):
        resolve(SecretRef("file", "sftp/lincoln-usd/password"), {"ROSTERSYNC_HOME": str(tmp_path)})
    with pytest.raises(SecretUnavailable, match="entry sftp/grant-usd/password is not in"):
        resolve(SecretRef("file", "sftp/grant-usd/password"), env)
    assert store.remove("sftp/lincoln-usd/password") and store.names() == []


def test_registry_stores_references_and_credentials_resolve_at_use_time(tmp_path: Path, secret_value: str) -> None:
    key = Fernet.generate_key().decode()
    env = {"ROSTERSYNC_HOME": str(tmp_path), "ROSTERSYNC_SECRETS_KEY": key}
    SecretsFile(tmp_path / SECRETS_FILE_NAME, key.encode()).put("sftp/lincoln-usd/password", secret_value)
    source = SftpSource(
        host="127.0.0.1", port=22, username="lincoln-usd", remote_dir="/outgoing", host_key=HOST_KEY,
        password_secret=SecretRef("file", "sftp/lincoln-usd/password"),
    )
    registry_path = tmp_path / "districts.yaml"
    DistrictRegistry({}).with_district(District("lincoln-usd", "Lincoln", "lincoln", source)).save(registry_path)

    text = registry_path.read_text()
    assert secret_value not in text and "secrets_file: sftp/lincoln-usd/password" in text
    loaded = DistrictRegistry.load(registry_path).get("lincoln-usd").sftp
    assert loaded == source
    credentials = loaded.credentials(env)
    assert credentials.password == secret_value
    assert secret_value not in repr(credentials) and secret_value not in repr(loaded)
    with pytest.raises(RegistryError) as unset:
        loaded.credentials({"ROSTERSYNC_HOME": str(tmp_path)})
    assert "SFTP password for lincoln-usd@127.0.0.1" in str(unset.value) and secret_value not in str(unset.value)


def test_registry_refuses_two_sources_for_one_secret_and_unknown_reference_fields(tmp_path: Path) -> None:
    base = {"host": "h", "username": "u", "remote_dir": "/o", "host_key": HOST_KEY}
    cases = {
        "give sftp.password_env or sftp.password_secret, not both": {
            **base, "password_env": "PW", "password_secret": {"secrets_file": "x"}},
        "sftp.password_secret: fields vault are not a secret reference": {**base, "password_secret": {"vault": "x"}},
    }
    for message, sftp in cases.items():
        path = tmp_path / "districts.yaml"
        path.write_text(json.dumps({"districts": [{"slug": "lincoln-usd", "sftp": sftp}]}))
        with pytest.raises(RegistryError, match=message):
            DistrictRegistry.load(path)


def test_a_rest_source_resolves_its_secret_through_the_same_references(tmp_path: Path, secret_value: str) -> None:
    key = Fernet.generate_key()
    SecretsFile(tmp_path / SECRETS_FILE_NAME, key).put("rest/lincoln-usd/client_secret", secret_value)
    registry_path = tmp_path / "districts.yaml"
    registry_path.write_text(json.dumps({"districts": [{"slug": "lincoln-usd", "rest": {
        "base_url": "https://sis.example.org", "version": "v1p2",
        "auth": {"type": "oauth2", "token_url": "https://sis.example.org/token", "client_id": "rostersync",
                 "secret": {"secrets_file": "rest/lincoln-usd/client_secret"}},
    }}]}))
    registry = DistrictRegistry.load(registry_path)
    registry.save(registry_path)  # written back: still the reference only
    rest = DistrictRegistry.load(registry_path).get("lincoln-usd").rest

    credentials = rest.credentials({"ROSTERSYNC_HOME": str(tmp_path), "ROSTERSYNC_SECRETS_KEY": key.decode()})
    assert credentials.client_secret == secret_value and secret_value not in repr(credentials)
    assert secret_value not in registry_path.read_text()
    with pytest.raises(ValueError, match="ROSTERSYNC_SECRETS_KEY is not set") as unset:
        rest.credentials({"ROSTERSYNC_HOME": str(tmp_path)})
    assert secret_value not in str(unset.value)
