"""A district's OneRoster REST source as the registry describes it (`rest:` under a district).

Like `sftp:`, it names secrets only by environment variable (`client_secret_env`,
`consumer_secret_env`); a secret written into the registry is refused. Parsing errors are
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

_OAUTH2_FIELDS = ("token_url", "client_id", "client_secret_env", "scope")
_OAUTH1_FIELDS = ("consumer_key", "consumer_secret_env")


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
        auth = {k: v for k, v in vars(self.auth).items() if v is not None}
        data: dict[str, Any] = {"base_url": self.base_url, "version": self.version, "auth": auth}
        if self.base_path is not None:
            data["base_path"] = self.base_path
        data["page_size"] = self.page_size
        if self.delta:
            data["delta"] = True
        return data

    def credentials(self, environ: Mapping[str, str] | None = None) -> Credentials:
        """The auth with its secret read from the environment variable the registry names."""
        env = os.environ if environ is None else environ
        auth = self.auth
        var = auth.client_secret_env if auth.type == "oauth2" else auth.consumer_secret_env
        assert var is not None
        if var not in env:
            raise ValueError(f"environment variable {var} (OneRoster REST {auth.type} secret for {self.base_url}) is not set")
        if auth.type == "oauth2":
            assert auth.token_url is not None and auth.client_id is not None
            return OAuth2ClientCredentials(auth.token_url, auth.client_id, env[var], auth.scope)
        assert auth.consumer_key is not None
        return OAuth1Credentials(auth.consumer_key, env[var])

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
    unknown = sorted(set(raw) - {"type", *allowed})
    if unknown:
        raise ValueError(f"auth ({kind}) has unknown field(s) {', '.join(unknown)}")
    missing = [name for name in required if not raw.get(name)]
    if missing:
        raise ValueError(f"auth ({kind}) is missing {', '.join(missing)}")
    return RestAuth(type=kind, **{name: str(raw[name]) for name in allowed if raw.get(name) is not None})
