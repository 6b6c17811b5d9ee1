"""A OneRoster REST (v1p1, v1p2) rostering client: authentication, pagination and retries, page by page.

Pages are yielded as the provider sent them (raw bytes plus the parsed records) so the pull can be
archived untouched, like an SFTP delivery. What providers do differently is absorbed here:

- auth: OAuth 2 client credentials (token cached until shortly before it expires, fetched again
  after a 401) or OAuth 1.0a HMAC-SHA256 request signing for v1p1 providers (oauth1.py);
- pagination: the `Link: <...>; rel="next"` header when the provider sends one, else offset/limit;
  a provider that caps `limit` (asked 500, got 100) is detected by a page shorter than asked while
  more records exist (`X-Total-Count`, or a probe of the next offset when there is no total) and
  the pull continues by the page size it really gets. It never stops early silently: a pull that
  ends with fewer records than the provider's total is an error, as is a loop (a `next` link seen
  before) or more than `max_pages` pages;
- 429 (honouring Retry-After) and 5xx, timeouts and dropped connections are retried with
  exponential backoff; other 4xx are not (a wrong secret does not get better by retrying).

Secrets never appear in messages or reprs: errors name the district's endpoint, URL and status.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode, urljoin

import requests

from rostersync_assets.connectors import oauth1
from rostersync_assets.connectors.http_auth import AuthorizationHeader

VERSIONS = ("v1p1", "v1p2")
DEFAULT_BASE_PATHS = {"v1p1": "/ims/oneroster/v1p1", "v1p2": "/ims/oneroster/rostering/v1p2"}
# The collections rostersync syncs, parents first; demographics is pulled only when the provider serves it.
ENDPOINTS = ("orgs", "academicSessions", "courses", "classes", "users", "demographics", "enrollments")
OPTIONAL_ENDPOINTS = frozenset({"demographics"})
# Refresh an OAuth 2 token this long before the provider says it expires (clock skew, slow requests).
TOKEN_MARGIN_S = 30.0
MAX_RETRY_AFTER_S = 120.0


class RestPullError(RuntimeError):
    """The provider could not be read completely; nothing from this pull may be used."""


class EndpointMissing(RestPullError):
    """The provider does not serve this collection (404): fine for optional ones such as demographics."""


@dataclass(frozen=True)
class OAuth2ClientCredentials:
    """OAuth 2 client credentials (1EdTech Security Framework): a bearer token from the token endpoint."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None


@dataclass(frozen=True)
class OAuth1Credentials:
    """OAuth 1.0a one-legged signing (consumer key and secret), HMAC-SHA256."""

    consumer_key: str
    consumer_secret: str = field(repr=False)


Credentials = OAuth2ClientCredentials | OAuth1Credentials


@dataclass(frozen=True)
class Page:
    """One page of a collection as received: its raw body (archived as is) and its records."""

    endpoint: str
    number: int
    url: str
    body: bytes
    records: list[dict[str, Any]]
    total: int | None


@dataclass
class PullStats:
    """What the pagination had to do, for the pull manifest and run metadata."""

    requests: int = 0
    retries: int = 0
    capped_limits: dict[str, int] = field(default_factory=dict)


class OneRosterRestClient:
    """Reads rostering collections from one provider; `pages(endpoint, filter)` yields every page."""

    def __init__(
        self,
        base_url: str,
        version: str,
        credentials: Credentials,
        *,
        base_path: str | None = None,
        page_size: int = 100,
        timeout_s: float = 30.0,
        max_attempts: int = 5,
        backoff_base_s: float = 0.5,
        max_pages: int = 100_000,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if version not in VERSIONS:
            raise ValueError(f"OneRoster REST version must be one of {', '.join(VERSIONS)}, not {version!r}")
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        path = DEFAULT_BASE_PATHS[version] if base_path is None else base_path
        self.root = base_url.rstrip("/") + "/" + path.strip("/")
        self.version = version
        self.page_size = page_size
        self.stats = PullStats()
        self._credentials = credentials
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._backoff_base_s = backoff_base_s
        self._max_pages = max_pages
        self._session = session or requests.Session()
        self._sleep = sleep
        self._token: str | None = None
        self._token_expires = 0.0

    def __repr__(self) -> str:
        return f"OneRosterRestClient(root={self.root!r}, version={self.version!r})"

    def close(self) -> None:
        self._session.close()

    def collection_url(self, endpoint: str, *, offset: int, limit: int, filter: str | None = None) -> str:
        """The URL of one page; the query is RFC 3986-encoded so OAuth 1 signs exactly what is sent."""
        params = {"limit": str(limit), "offset": str(offset)}
        if filter:
            params["filter"] = filter
        return f"{self.root}/{endpoint}?{urlencode(params, quote_via=quote, safe='')}"

    def pages(self, endpoint: str, filter: str | None = None) -> Iterator[Page]:
        """Every page of `endpoint` in order (see the module docstring for the pagination rules)."""
        limit, offset, fetched, number = self.page_size, 0, 0, 0
        url: str | None = self.collection_url(endpoint, offset=0, limit=limit, filter=filter)
        seen: set[str] = set()
        total: int | None = None
        cap_known = False
        while url is not None:
            if url in seen:
                raise RestPullError(f"{endpoint}: the provider's pagination loops back to {url}")
            if number >= self._max_pages:
                raise RestPullError(f"{endpoint}: more than {self._max_pages} pages; stopped (max_pages)")
            seen.add(url)
            response = self._get(endpoint, url)
            records = _records(endpoint, url, response)
            total = _total(response, total)
            number += 1
            fetched += len(records)
            yield Page(endpoint, number, url, response.content, records, total)
            url, limit, cap_known = self._next_url(
                endpoint, response, url, filter, offset, limit, len(records), fetched, total, cap_known
            )
            offset += len(records)
        if total is not None and fetched < total:
            raise RestPullError(
                f"{endpoint}: the provider reported {total} records (X-Total-Count) but pagination ended after "
                f"{fetched}; refusing an incomplete pull"
            )

    def _next_url(
        self, endpoint: str, response: requests.Response, url: str, filter: str | None,
        offset: int, limit: int, received: int, fetched: int, total: int | None, cap_known: bool,
    ) -> tuple[str | None, int, bool]:
        """(next page URL or None, page size to ask for, whether a provider cap is known)."""
        next_link = response.links.get("next", {}).get("url")
        if next_link:
            return (urljoin(url, next_link) if received else None), limit, cap_known
        if response.links or received == 0:
            # A provider that paginates by Link said there is no next page; an empty page is the end.
            return None, limit, cap_known
        following = offset + received
        if received < limit:
            more = (total is not None and fetched < total) or (total is None and not cap_known)
            if not more:
                return None, limit, cap_known
            # Shorter than asked while more may exist: the provider caps `limit`; continue by what it gives
            # (without a total, the next offset is probed: an empty page there means this was the end).
            if total is not None:
                self.stats.capped_limits[endpoint] = received
            return self.collection_url(endpoint, offset=following, limit=received, filter=filter), received, True
        if total is not None and fetched >= total:
            return None, limit, cap_known
        return self.collection_url(endpoint, offset=following, limit=limit, filter=filter), limit, cap_known

    # --- HTTP with auth and retries -----------------------------------------------------------

    def _get(self, endpoint: str, url: str) -> requests.Response:
        """GET with auth; 429/5xx/connection errors retried with backoff; 401 under OAuth 2 refetches the token once."""
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            self.stats.requests += 1
            try:
                response = self._session.get(
                    url, headers={"Accept": "application/json"}, auth=self._authorization(url), timeout=self._timeout_s
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                if attempt >= self._max_attempts:
                    raise RestPullError(
                        f"{endpoint}: {url} unreachable after {attempt} attempts ({type(error).__name__})"
                    ) from None
                self._backoff(attempt, None)
                continue
            if response.status_code == 401 and isinstance(self._credentials, OAuth2ClientCredentials) and not refreshed:
                refreshed = True
                self._token = None
                continue
            if response.status_code == 404 and endpoint in OPTIONAL_ENDPOINTS:
                raise EndpointMissing(f"{endpoint}: not served by the provider (404 at {url})")
            if response.status_code == 429 or response.status_code >= 500:
                if attempt >= self._max_attempts:
                    raise RestPullError(f"{endpoint}: {url} answered {response.status_code} after {attempt} attempts")
                self._backoff(attempt, response.headers.get("Retry-After"))
                continue
            if response.status_code != 200:
                raise RestPullError(f"{endpoint}: {url} answered {response.status_code}{_code_minor(response)}")
            return response

    def _backoff(self, attempt: int, retry_after: str | None) -> None:
        self.stats.retries += 1
        delay = _retry_after_s(retry_after)
        if delay is None:
            delay = self._backoff_base_s * 2 ** (attempt - 1)
        self._sleep(min(delay, MAX_RETRY_AFTER_S))

    def _authorization(self, url: str) -> AuthorizationHeader:
        """OAuth 1 signs `url` itself (its query too); OAuth 2 sends the cached bearer token."""
        if isinstance(self._credentials, OAuth1Credentials):
            return AuthorizationHeader(oauth1.authorization_header(
                "GET", url, self._credentials.consumer_key, self._credentials.consumer_secret
            ))
        return AuthorizationHeader(f"Bearer {self._bearer_token()}")

    def _bearer_token(self) -> str:
        """The cached OAuth 2 token, or a new one from the token endpoint (client id/secret in Basic auth)."""
        if self._token is not None and time.monotonic() < self._token_expires:
            return self._token
        credentials = self._credentials
        assert isinstance(credentials, OAuth2ClientCredentials)
        data = {"grant_type": "client_credentials"}
        if credentials.scope:
            data["scope"] = credentials.scope
        for attempt in range(1, self._max_attempts + 1):
            self.stats.requests += 1
            try:
                response = self._session.post(
                    credentials.token_url, data=data, auth=(credentials.client_id, credentials.client_secret),
                    timeout=self._timeout_s,
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                if attempt == self._max_attempts:
                    raise RestPullError(
                        f"token endpoint {credentials.token_url} unreachable ({type(error).__name__})"
                    ) from None
                self._backoff(attempt, None)
                continue
            if (response.status_code == 429 or response.status_code >= 500) and attempt < self._max_attempts:
                self._backoff(attempt, response.headers.get("Retry-After"))
                continue
            break
        if response.status_code != 200:
            raise RestPullError(
                f"token endpoint {credentials.token_url} refused client {credentials.client_id}: HTTP {response.status_code}"
            )
        try:
            body = response.json()
            token = str(body["access_token"])
            lifetime = float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise RestPullError(f"token endpoint {credentials.token_url} returned no access_token") from None
        self._token = token
        self._token_expires = time.monotonic() + max(lifetime - TOKEN_MARGIN_S, 0.0)
        return token


def _records(endpoint: str, url: str, response: requests.Response) -> list[dict[str, Any]]:
    """The collection's records: `{"<endpoint>": [...]}` (REFERENCE §10.5)."""
    try:
        body = response.json()
    except ValueError:
        raise RestPullError(f"{endpoint}: {url} did not return JSON") from None
    records = body.get(endpoint) if isinstance(body, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise RestPullError(f"{endpoint}: {url} returned no '{endpoint}' list")
    return records


def _total(response: requests.Response, previous: int | None) -> int | None:
    """X-Total-Count when the provider sends a usable one (it may change between pages: the latest wins)."""
    value = response.headers.get("X-Total-Count")
    try:
        return int(value) if value is not None else previous
    except ValueError:
        return previous


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


def _code_minor(response: requests.Response) -> str:
    """The imsx code minor of an error body, if any (e.g. `unauthorisedrequest`), for the message."""
    try:
        fields = response.json()["imsx_CodeMinor"]["imsx_codeMinorField"]
        return f" ({fields[0]['imsx_codeMinorFieldValue']})"
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def delta_filter(since: datetime) -> str:
    """`dateLastModified>'<ISO UTC>'`: records changed since `since` (REFERENCE §10.4)."""
    return f"dateLastModified>'{since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z'"
