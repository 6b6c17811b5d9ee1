"""A district's OneRoster REST source as the registry describes it (`rest:` under a district).

Like `sftp:`, it names its secret only by reference: an environment variable (`client_secret_env`,
`consumer_secret_env`) or `auth.secret` (AWS Secrets Manager or the home's encrypted secrets file, see
secret_refs.py); a secret written into the registry is refused. Parsing errors are
ValueErrors naming the field; the registry adds the district.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rostersync_assets.connectors.oneroster_rest import (
    VERSIONS,
    Credentials,
    OAuth1Credentials,
    OAuth2ClientCredentials,
    OneRosterRestClient,
)
from rostersync_assets.secret_refs import SecretRef, SecretUnavailable, resolve

_OAUTH2_FIELDS = ("token_url", "client_id", "client_secret_env", "scope")
_OAUTH1_FIELDS = ("consumer_key", "consumer_secret_env")
# Instead of *_secret_env: `secret: {aws_secret_id: ID[, json_key: K]}` or `secret: {secrets_file: ENTRY}`.
_SECRET_FIELD = "secret"


@dataclass(frozen=True)
class RestAuth:
    """`type: oauth2` (token_url, client_id, client_secret_env, optional scope) or `type: oauth1`
    (consumer_key, consumer_secret_env; signed HMAC-SHA256)."""

    type: str
    token_url: str | None = None
    client_id: str | None = None
    client_secret_env: str | None = None
    scope: str | None = None
    consumer_key: str | None = None
    consumer_secret_env: str | None = None
    secret: SecretRef | None = None

    def secret_ref(self) -> SecretRef:
        """Where the client or consumer secret lives (an environment variable or a stored reference)."""
        var = self.client_secret_env if self.type == "oauth2" else self.consumer_secret_env
        if var is not None:
            return SecretRef("env", var)
        assert self.secret is not None, "the registry requires *_secret_env or secret"
        return self.secret


@dataclass(frozen=True)
class RestSource:
    """Where and how to pull a district's roster over OneRoster REST.

    `delta: true` pulls only records changed since the last pull the LMS fully acknowledged
    (`filter=dateLastModified>...`); the first pull, and any pull without such a predecessor, is bulk.
    """

    base_url: str
    version: str
    auth: RestAuth
    base_path: str | None = None
    page_size: int = 100
    delta: bool = False

    @classmethod
    def from_mapping(cls, raw: Any) -> RestSource:
        if not isinstance(raw, Mapping):
            raise ValueError("must be a mapping")
        unknown = sorted(set(raw) - {"base_url", "version", "base_path", "auth", "page_size", "delta"})
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}")
        if not raw.get("base_url") or not str(raw["base_url"]).startswith(("https://", "http://")):
            raise ValueError("base_url must be an http(s) URL")
        if raw.get("version") not in VERSIONS:
            raise ValueError(f"version must be one of {', '.join(VERSIONS)}, not {raw.get('version')!r}")
        page_size = raw.get("page_size", 100)
        if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 1:
            raise ValueError(f"page_size must be a positive integer, not {page_size!r}")
        if not isinstance(raw.get("delta", False), bool):
            raise ValueError("delta must be true or false")
        return cls(
            base_url=str(raw["base_url"]),
            version=str(raw["version"]),
            auth=_auth(raw.get("auth")),
            base_path=None if raw.get("base_path") is None else str(raw["base_path"]),
            page_size=page_size,
            delta=bool(raw.get("delta", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        auth = {k: v.to_mapping() if isinstance(v, SecretRef) else v for k, v in vars(self.auth).items() if v is not None}
        data: dict[str, Any] = {"base_url": self.base_url, "version": self.version, "auth": auth}
        if self.base_path is not None:
            data["base_path"] = self.base_path
        data["page_size"] = self.page_size
        if self.delta:
            data["delta"] = True
        return data

    def credentials(self, environ: Mapping[str, str] | None = None) -> Credentials:
        """The auth with its secret fetched where the registry says (secret_refs.py), at use time."""
        env = os.environ if environ is None else environ
        auth = self.auth
        ref = auth.secret_ref()
        if ref.kind == "env" and ref.name not in env:
            raise ValueError(f"environment variable {ref.name} (OneRoster REST {auth.type} secret for {self.base_url}) is not set")
        try:
            value = resolve(ref, env)
        except SecretUnavailable as error:
            raise ValueError(f"OneRoster REST {auth.type} secret for {self.base_url}: {error}") from None
        if auth.type == "oauth2":
            assert auth.token_url is not None and auth.client_id is not None
            return OAuth2ClientCredentials(auth.token_url, auth.client_id, value, auth.scope)
        assert auth.consumer_key is not None
        return OAuth1Credentials(auth.consumer_key, value)

    def client(self, environ: Mapping[str, str] | None = None, **options: Any) -> OneRosterRestClient:
        return OneRosterRestClient(
            self.base_url, self.version, self.credentials(environ),
            base_path=self.base_path, page_size=self.page_size, **options,
        )

    def describe(self) -> str:
        """Where the pull comes from, for the delivery's `source` (no credentials)."""
        return f"oneroster-rest {self.version} {self.base_url.rstrip('/')}{self.base_path or ''}"


def _auth(raw: Any) -> RestAuth:
    if not isinstance(raw, Mapping):
        raise ValueError("auth must be a mapping with type oauth2 or oauth1")
    kind = raw.get("type")
    for secret in ("client_secret", "consumer_secret"):
        if secret in raw:
            raise ValueError(f"auth.{secret} holds a secret in the registry; name an environment variable with auth.{secret}_env")
    if kind == "oauth2":
        allowed, required = _OAUTH2_FIELDS, ("token_url", "client_id", "client_secret_env")
    elif kind == "oauth1":
        allowed, required = _OAUTH1_FIELDS, _OAUTH1_FIELDS
    else:
        raise ValueError(f"auth.type must be oauth2 or oauth1, not {kind!r}")
    unknown = sorted(set(raw) - {"type", _SECRET_FIELD, *allowed})
    if unknown:
        raise ValueError(f"auth ({kind}) has unknown field(s) {', '.join(unknown)}")
    secret_env = required[-1]
    if raw.get(_SECRET_FIELD) is not None:
        if raw.get(secret_env):
            raise ValueError(f"auth ({kind}): give {secret_env} or {_SECRET_FIELD}, not both")
        required = required[:-1]
    missing = [name for name in required if not raw.get(name)]
    if missing:
        raise ValueError(f"auth ({kind}) is missing {', '.join(missing)}")
    try:
        secret = None if raw.get(_SECRET_FIELD) is None else SecretRef.from_mapping(raw[_SECRET_FIELD])
    except ValueError as error:
        raise ValueError(f"auth.{_SECRET_FIELD}: {error}") from None
    return RestAuth(type=kind, secret=secret, **{name: str(raw[name]) for name in allowed if raw.get(name) is not None})
