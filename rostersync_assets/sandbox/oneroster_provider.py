"""A local OneRoster REST provider (v1p1 and v1p2 rostering) serving the repository's test data.

Tests pull from it over real HTTP, so the client's auth, pagination and retries run as they would
against a district's SIS. It serves OneRoster CSV-shaped rows (a generated district, a sample set)
as JSON through the same field mapping the reader uses (oneroster/rest_json.py `FIELDS`), and
behaves like the providers described in REFERENCE §10:

- auth: OAuth 2 client credentials (`POST /oauth/token`, Basic auth, bearer tokens with a lifetime)
  and OAuth 1.0a HMAC-SHA256 signatures (verified over the exact request), either on every path;
- pagination: `Link` rel="next" (`pagination="link"`) or bare offset/limit (`"offset"`), with or
  without `X-Total-Count`, and `max_limit` capping `limit` whatever the client asks for;
- `filter=dateLastModified>'...'` (also `>=`); other filters answer 400 `invalid_filter_field`;
- faults: `ProviderFaults.queue` answers the next collection requests with the listed statuses
  (429 with Retry-After, 500, 503); `overstate_total` makes X-Total-Count disagree with the pages.

Not a conformance implementation: only collections of the seven synced entities are served.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rostersync_assets.connectors import oauth1
from rostersync_assets.connectors.oneroster_rest import VERSIONS
from rostersync_assets.oneroster.rest_json import FIELDS

DEFAULT_MODIFIED = "2026-09-01T02:00:00.000Z"
_FILTER = re.compile(r"^dateLastModified(>=|>)'([^']+)'$")
# The `type` of each reference field (REFERENCE §10.5).
_REF_TYPES = {
    "parent": "org", "schoolYear": "academicSession", "org": "org", "course": "course", "school": "org",
    "terms": "academicSession", "orgs": "org", "agents": "user", "class": "class", "user": "user",
    "primaryOrg": "org",
}
_STARTUP_TIMEOUT_S = 10.0


@dataclass
class ProviderFaults:
    """Misbehaviour switched on by a test: statuses for the next collection requests, in order."""

    queue: list[int] = field(default_factory=list)
    retry_after_s: int = 0
    # X-Total-Count claims this many more records than the pages hold (count and pages disagree).
    overstate_total: int = 0


@dataclass
class ProviderSettings:
    """Credentials the provider accepts and how it paginates."""

    client_id: str = "rostersync"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)
    consumer_key: str = "rostersync-consumer"
    consumer_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)
    token_lifetime_s: int = 3600
    pagination: str = "link"
    send_total: bool = True
    max_limit: int | None = None
    serve_demographics: bool = True
    # A path the OneRoster paths sit under (a SIS serving OneRoster below its own path), e.g. "/district/42".
    mount: str = ""


@dataclass
class OneRosterProvider:
    """The provider's data (entity -> CSV-shaped rows), settings, faults and what it was asked."""

    rows: dict[str, list[dict[str, str]]]
    settings: ProviderSettings = field(default_factory=ProviderSettings)
    faults: ProviderFaults = field(default_factory=ProviderFaults)
    tokens_issued: int = 0
    requests: list[str] = field(default_factory=list)
    _tokens: dict[str, float] = field(default_factory=dict, repr=False)

    @classmethod
    def from_tables(cls, tables: Mapping[str, Any], modified: str = DEFAULT_MODIFIED, **settings: Any) -> OneRosterProvider:
        """From DataFrames shaped like the 1.1 CSV files (a generated district's `tables`); blank
        status and dateLastModified become `active` and `modified`."""
        rows = {
            entity: [
                {**row, "status": row["status"] or "active", "dateLastModified": row["dateLastModified"] or modified}
                for row in frame.to_dict("records")
            ]
            for entity, frame in tables.items()
            if entity in FIELDS
        }
        return cls(rows, ProviderSettings(**settings))

    def revoke_tokens(self) -> None:
        """Forget every issued token (a provider restart): the next bearer request answers 401."""
        self._tokens.clear()

    def touch(self, entity: str, sourced_ids: set[str], modified: str, **values: str) -> None:
        """Change records as the SIS would: new dateLastModified (and any values, e.g. status)."""
        for row in self.rows[entity]:
            if row["sourcedId"] in sourced_ids:
                row.update(values, dateLastModified=modified)


def to_json(entity: str, row: Mapping[str, str], version: str, base: str) -> dict[str, Any]:
    """A CSV-shaped row as the provider's JSON record of `version` (v1p2 users get embedded roles)."""
    record: dict[str, Any] = {}
    for column, accessor in FIELDS[entity].items():
        kind, _, name = accessor.rpartition(":")
        value = row.get(column, "")
        if entity == "users" and version == "v1p2" and column in ("role", "orgSourcedIds"):
            continue
        if accessor == "userIds":
            record["userIds"] = [
                dict(zip(("type", "identifier"), item.strip("{}").split(":", 1))) for item in _split(value)
            ]
        elif kind == "ref":
            if value:
                record[name] = _ref(name, value, base)
        elif kind == "refs":
            record[name] = [_ref(name, item, base) for item in _split(value)]
        elif kind == "list":
            record[name] = _split(value)
        elif value != "":
            record[name] = value
    if entity == "users" and version == "v1p2":
        orgs = _split(row.get("orgSourcedIds", ""))
        record["roles"] = [
            {"roleType": "primary" if n == 0 else "secondary", "role": row.get("role", ""), "org": _ref("org", org, base)}
            for n, org in enumerate(orgs)
        ]
        if orgs:
            record["primaryOrg"] = _ref("primaryOrg", orgs[0], base)
    return record


def _split(value: str) -> list[str]:
    return [item for item in value.split(",") if item] if value else []


def _ref(name: str, sourced_id: str, base: str) -> dict[str, str]:
    kind = _REF_TYPES[name]
    plural = "academicSessions" if kind == "academicSession" else f"{kind}es" if kind == "class" else f"{kind}s"
    return {"href": f"{base}/{plural}/{sourced_id}", "sourcedId": sourced_id, "type": kind}


def _error(status: int, code_minor: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = {
        "imsx_codeMajor": "failure",
        "imsx_severity": "error",
        "imsx_description": code_minor,
        "imsx_CodeMinor": {"imsx_codeMinorField": [{"imsx_codeMinorFieldName": "TargetEndSystem", "imsx_codeMinorFieldValue": code_minor}]},
    }
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


class _ProviderApi:
    def __init__(self, provider: OneRosterProvider) -> None:
        self.provider = provider
        self.lock = threading.Lock()

    async def token(self, request: Request) -> JSONResponse:
        settings = self.provider.settings
        form = dict(parse_qsl((await request.body()).decode()))
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            client_id, secret = "", ""
        if scheme.lower() != "basic" or client_id != settings.client_id or not secrets.compare_digest(secret, settings.client_secret):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.provider._tokens[token] = time.monotonic() + settings.token_lifetime_s
            self.provider.tokens_issued += 1
        return JSONResponse({"access_token": token, "token_type": "bearer", "expires_in": settings.token_lifetime_s})

    async def collection(self, request: Request) -> JSONResponse:
        version, entity = request.path_params["version"], request.path_params["entity"]
        self.provider.requests.append(str(request.url))
        if not self._authorised(request):
            return _error(401, "unauthorisedrequest")
        with self.lock:
            fault = self.provider.faults.queue.pop(0) if self.provider.faults.queue else None
        if fault is not None:
            headers = {"Retry-After": str(self.provider.faults.retry_after_s)} if fault == 429 else None
            return _error(fault, "server_busy" if fault == 429 else "internal_server_error", headers)
        settings = self.provider.settings
        if version not in VERSIONS or entity not in FIELDS or (entity == "demographics" and not settings.serve_demographics):
            return _error(404, "unknownobject")
        try:
            limit = int(request.query_params.get("limit", "100"))
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            return _error(400, "invaliddata")
        if limit < 1 or offset < 0:
            return _error(400, "invaliddata")
        rows = _filtered(self.provider.rows.get(entity, []), request.query_params.get("filter"))
        if rows is None:
            return _error(400, "invalid_filter_field")
        served = min(limit, settings.max_limit) if settings.max_limit else limit
        page = rows[offset: offset + served]
        # References and links name the base path the request came in on (a v1p2 feed may sit on /v1p1).
        base = f"{request.url.scheme}://{request.url.netloc}{request.url.path.rsplit('/', 1)[0]}"
        headers = {"X-Total-Count": str(len(rows) + self.provider.faults.overstate_total)} if settings.send_total else {}
        if settings.pagination == "link" and offset + len(page) < len(rows):
            query = {**request.query_params, "offset": str(offset + len(page)), "limit": str(limit)}
            headers["Link"] = f'<{base}/{entity}?{urlencode(query)}>; rel="next"'
        return JSONResponse({entity: [to_json(entity, row, version, base) for row in page]}, headers=headers)

    def _authorised(self, request: Request) -> bool:
        settings = self.provider.settings
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            expiry = self.provider._tokens.get(header.removeprefix("Bearer "))
            return expiry is not None and time.monotonic() < expiry
        params = oauth1.parse_authorization_header(header)
        if params.get("oauth_consumer_key") != settings.consumer_key:
            return False
        url = f"{request.url.scheme}://{request.url.netloc}{request.url.path}"
        return oauth1.verify("GET", url, request.query_params.multi_items(), params, settings.consumer_secret)


def _filtered(rows: list[dict[str, str]], expression: str | None) -> list[dict[str, str]] | None:
    """Rows matching `dateLastModified>'...'` (or `>=`); None for a filter this provider does not support."""
    if not expression:
        return rows
    match = _FILTER.match(expression)
    if match is None:
        return None
    try:
        since = datetime.fromisoformat(match.group(2))
    except ValueError:
        return None
    inclusive = match.group(1) == ">="
    chosen = []
    for row in rows:
        modified = datetime.fromisoformat(row["dateLastModified"])
        if modified > since or (inclusive and modified == since):
            chosen.append(row)
    return chosen


def create_app(provider: OneRosterProvider) -> Starlette:
    """The provider as an ASGI app: the token endpoint and every collection under both base paths."""
    api = _ProviderApi(provider)
    mount = provider.settings.mount.rstrip("/")
    return Starlette(routes=[
        Route("/oauth/token", api.token, methods=["POST"]),
        Route(f"{mount}/ims/oneroster/{{version:str}}/{{entity:str}}", api.collection, methods=["GET"]),
        Route(f"{mount}/ims/oneroster/rostering/{{version:str}}/{{entity:str}}", api.collection, methods=["GET"]),
    ])


@contextmanager
def running_provider(provider: OneRosterProvider, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve the provider in a daemon thread on a free port; yields its base URL (no path)."""
    config = uvicorn.Config(create_app(provider), host=host, port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="oneroster-provider", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the OneRoster provider did not start")
            time.sleep(0.01)
        bound_host, port = server.servers[0].sockets[0].getsockname()[:2]
        yield f"http://{bound_host}:{port}"
    finally:
        server.should_exit = True
        thread.join(_STARTUP_TIMEOUT_S)
