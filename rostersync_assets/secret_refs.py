"""Credentials by reference: the registry names where a secret lives, this module fetches it at use time.

A district's SFTP password or key (or a REST client secret) is never written into the registry. The
registry holds a `SecretRef` instead, one of:

- `env`: an environment variable (`password_env: VAR` in the registry);
- `aws`: an AWS Secrets Manager secret id or ARN, optionally a key inside its JSON value
  (`password_secret: {aws_secret_id: ID, json_key: password}`), read with boto3 when needed, so a
  rotated secret takes effect on the next run;
- `file`: an entry of the home's secrets file (`password_secret: {secrets_file: ENTRY}`), each value
  encrypted with Fernet under a key from the environment (`ROSTERSYNC_SECRETS_KEY`): the file alone
  reveals nothing, so it can sit beside the registry and in backups.

Errors name the reference (variable, secret id, entry) and never the value. Dagster-free.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

SECRETS_KEY_ENV = "ROSTERSYNC_SECRETS_KEY"
SECRETS_FILE_NAME = "secrets.enc.json"
_HOME_ENV = "ROSTERSYNC_HOME"  # as home.HOME_ENV; the file lives in the home, found the same way
_DEFAULT_HOME = ".rostersync"
_KINDS = ("env", "aws", "file")


class SecretUnavailable(ValueError):
    """A referenced secret cannot be read; the message names the reference, never a value."""


@dataclass(frozen=True)
class SecretRef:
    """Where one secret lives: `kind` env | aws | file, `name` the variable / secret id / entry."""

    kind: str
    name: str
    json_key: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"secret reference kind must be one of {', '.join(_KINDS)}, not {self.kind!r}")
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"{self.kind} secret reference needs a non-empty name")
        if self.json_key is not None and self.kind != "aws":
            raise ValueError("json_key applies only to an AWS Secrets Manager reference")

    @classmethod
    def from_mapping(cls, raw: Any) -> SecretRef:
        """`{aws_secret_id: ID[, json_key: K]}` or `{secrets_file: ENTRY}` (env refs are `*_env` strings)."""
        if not isinstance(raw, Mapping):
            raise ValueError("must be a mapping with aws_secret_id (and optional json_key) or secrets_file")
        keys = set(raw)
        if keys <= {"aws_secret_id", "json_key"} and raw.get("aws_secret_id"):
            key = raw.get("json_key")
            return cls("aws", str(raw["aws_secret_id"]), None if key is None else str(key))
        if keys == {"secrets_file"} and raw.get("secrets_file"):
            return cls("file", str(raw["secrets_file"]))
        raise ValueError(f"fields {', '.join(sorted(map(str, keys)))} are not a secret reference: "
                         "use aws_secret_id (and optional json_key) or secrets_file")

    def to_mapping(self) -> dict[str, str]:
        """The registry form of an aws or file reference (env references are written as `*_env`)."""
        if self.kind == "aws":
            return {"aws_secret_id": self.name, **({"json_key": self.json_key} if self.json_key else {})}
        if self.kind == "file":
            return {"secrets_file": self.name}
        raise ValueError("an env reference is written as a *_env field")

    def describe(self) -> str:
        """How a person finds the secret (for messages and `districts list`); no value."""
        if self.kind == "env":
            return f"environment variable {self.name}"
        if self.kind == "aws":
            return f"AWS Secrets Manager secret {self.name}" + (f" (key {self.json_key})" if self.json_key else "")
        return f"secrets file entry {self.name}"


def secrets_file_path(environ: Mapping[str, str]) -> Path:
    """The home's secrets file: `$ROSTERSYNC_HOME/secrets.enc.json` (the home resolves as everywhere else)."""
    return Path(environ.get(_HOME_ENV) or _DEFAULT_HOME).expanduser().resolve() / SECRETS_FILE_NAME


def resolve(
    ref: SecretRef,
    environ: Mapping[str, str] | None = None,
    *,
    secretsmanager: Callable[[str | None], Any] | None = None,
) -> str:
    """The secret's value now. `secretsmanager(region)` builds a boto3 client (default: boto3's own,
    honouring AWS_ENDPOINT_URL_SECRETS_MANAGER and the usual AWS credentials)."""
    env = os.environ if environ is None else environ
    if ref.kind == "env":
        if ref.name not in env:
            raise SecretUnavailable(f"{ref.describe()} is not set")
        return env[ref.name]
    if ref.kind == "aws":
        return _from_secrets_manager(ref, secretsmanager or _boto3_client)
    return SecretsFile(secrets_file_path(env), fernet_key(env)).get(ref.name)


def fernet_key(environ: Mapping[str, str]) -> bytes:
    """The secrets-file key from the environment, or a message saying how to make one."""
    key = environ.get(SECRETS_KEY_ENV)
    if not key:
        raise SecretUnavailable(
            f"{SECRETS_KEY_ENV} is not set: the secrets file is encrypted with it; create one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` "
            "and keep it outside the home folder"
        )
    return key.encode()


class SecretsFile:
    """A JSON file of entry name -> Fernet token: names are visible, values only with the key.

    `key` None opens it for listing and removing entries only (unregistering a district needs no key).
    """

    def __init__(self, path: Path, key: bytes | None) -> None:
        self.path = path
        try:
            self._fernet = None if key is None else Fernet(key)
        except ValueError:
            raise SecretUnavailable(f"{SECRETS_KEY_ENV} is not a valid Fernet key (32 url-safe base64-encoded bytes)") from None

    def names(self) -> list[str]:
        return sorted(self._entries())

    def get(self, name: str) -> str:
        token = self._entries().get(name)
        if token is None:
            raise SecretUnavailable(f"secrets file entry {name} is not in {self.path}")
        try:
            return self._keyed().decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretUnavailable(
                f"secrets file entry {name} in {self.path} cannot be decrypted with {SECRETS_KEY_ENV} (another key?)"
            ) from None

    def put(self, name: str, value: str) -> None:
        """Encrypt and store `value` under `name` (replacing it), written atomically with mode 0600."""
        entries = self._entries()
        entries[name] = self._keyed().encrypt(value.encode()).decode()
        self._write(entries)

    def remove(self, name: str) -> bool:
        """Forget `name`; whether it was there."""
        entries = self._entries()
        if entries.pop(name, None) is None:
            return False
        self._write(entries)
        return True

    def _keyed(self) -> Fernet:
        if self._fernet is None:
            raise SecretUnavailable(f"{SECRETS_KEY_ENV} is needed to read or write {self.path}")
        return self._fernet

    def _entries(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        data = json.loads(self.path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise SecretUnavailable(f"{self.path} is not a rostersync secrets file")
        return {str(k): str(v) for k, v in data.items()}

    def _write(self, entries: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(entries, out, indent=2, sort_keys=True)
        tmp.replace(self.path)


def _boto3_client(region: str | None) -> Any:
    import boto3

    return boto3.client("secretsmanager", region_name=region)


def _from_secrets_manager(ref: SecretRef, client_for: Callable[[str | None], Any]) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    region = ref.name.split(":")[3] if ref.name.startswith("arn:") and ref.name.count(":") >= 6 else None
    try:
        answer = client_for(region).get_secret_value(SecretId=ref.name)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        raise SecretUnavailable(f"{ref.describe()} cannot be read: {code}") from None
    except BotoCoreError as error:
        raise SecretUnavailable(f"{ref.describe()} cannot be read: {type(error).__name__}") from None
    value = answer.get("SecretString")
    if value is None:
        raise SecretUnavailable(f"{ref.describe()} holds binary data, not a string")
    if ref.json_key is None:
        return str(value)
    try:
        document = json.loads(value)
    except json.JSONDecodeError:
        raise SecretUnavailable(f"{ref.describe()}: the secret is not a JSON object") from None
    if not isinstance(document, dict) or ref.json_key not in document:
        raise SecretUnavailable(f"{ref.describe()}: the secret's JSON has no key {ref.json_key}")
    return str(document[ref.json_key])
