"""An `Authorization` header as a requests auth object, so a ~/.netrc never replaces it.

requests looks up ~/.netrc for every request whose session and call carry no `auth`, and when the
host is listed there it overwrites the Authorization header with Basic credentials, silently
sending other credentials than the ones configured (and reading that file on every request).
Passing the header as `auth` turns that lookup off for our clients; proxies from the environment
still apply.
"""

from __future__ import annotations

import requests
import requests.auth


class AuthorizationHeader(requests.auth.AuthBase):
    """Sets `Authorization: <value>` on each request it authorizes; its repr never shows the value."""

    def __init__(self, value: str) -> None:
        self._value = value

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._value
        return request

    def __repr__(self) -> str:
        return "AuthorizationHeader(***)"
