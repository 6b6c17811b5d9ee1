"""OAuth 1.0a one-legged request signing with HMAC-SHA256 (RFC 5849 §3.4), as OneRoster v1p1 providers use it.

Written here rather than taken from a library because it is one short, well-specified algorithm, and
the local OneRoster provider verifies signatures with the same base-string rules: a request is signed
over its method, its URL without query, and every query and `oauth_*` parameter, so a signature made
for one page cannot be replayed for another. There is no token: the token secret part of the key is empty.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

SIGNATURE_METHOD = "HMAC-SHA256"


def percent_encode(value: str) -> str:
    """RFC 5849 §3.6: every byte except unreserved characters (A-Z a-z 0-9 - . _ ~) is %XX-encoded."""
    return quote(value, safe="-._~")


def base_string_uri(url: str) -> str:
    """RFC 5849 §3.4.1.2: scheme and host in lower case, default ports dropped, no query or fragment."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def base_string(method: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """RFC 5849 §3.4.1: METHOD&uri&normalized parameters (encoded, sorted by name then value)."""
    pairs = sorted((percent_encode(k), percent_encode(v)) for k, v in params if k != "oauth_signature")
    normalized = "&".join(f"{k}={v}" for k, v in pairs)
    return "&".join((method.upper(), percent_encode(base_string_uri(url)), percent_encode(normalized)))


def signature(method: str, url: str, params: Iterable[tuple[str, str]], consumer_secret: str) -> str:
    """The base64 HMAC-SHA256 of the base string, keyed `consumer_secret&` (no token secret)."""
    key = f"{percent_encode(consumer_secret)}&".encode()
    digest = hmac.new(key, base_string(method, url, params).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def authorization_header(
    method: str,
    url: str,
    consumer_key: str,
    consumer_secret: str,
    *,
    nonce: str | None = None,
    timestamp: int | None = None,
) -> str:
    """The `Authorization: OAuth ...` value for a request to `url` (its query parameters are signed too)."""
    oauth = {
        "oauth_consumer_key": consumer_key,
        "oauth_nonce": nonce or secrets.token_hex(16),
        "oauth_signature_method": SIGNATURE_METHOD,
        "oauth_timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "oauth_version": "1.0",
    }
    query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    oauth["oauth_signature"] = signature(method, url, [*query, *oauth.items()], consumer_secret)
    return "OAuth " + ", ".join(f'{k}="{percent_encode(v)}"' for k, v in oauth.items())


def parse_authorization_header(value: str) -> dict[str, str]:
    """The `oauth_*` parameters of an `Authorization: OAuth ...` header (empty if it is not one)."""
    scheme, _, rest = value.partition(" ")
    if scheme.lower() != "oauth":
        return {}
    params: dict[str, str] = {}
    for item in rest.split(","):
        name, _, quoted = item.strip().partition("=")
        if name:
            params[name] = unquote(quoted.strip().strip('"'))
    return params


def verify(method: str, url: str, query: Iterable[tuple[str, str]], oauth: Mapping[str, str], consumer_secret: str) -> bool:
    """Whether `oauth_signature` is the HMAC-SHA256 signature of this request (constant-time compare)."""
    if oauth.get("oauth_signature_method") != SIGNATURE_METHOD or "oauth_signature" not in oauth:
        return False
    expected = signature(method, url, [*query, *oauth.items()], consumer_secret)
    return hmac.compare_digest(expected, oauth["oauth_signature"])

