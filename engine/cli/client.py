"""A small synchronous client for a running Hookyard's /api/v1, used by the CLI commands.

The server is found with `--url` / `HOOKYARD_URL` and authenticated with the API key in
`HOOKYARD_API_KEY` (sent as `St2-Api-Key`, as the st2 CLI does). Every failure becomes a
`ClientError` whose message is one line a user can act on.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any

import click

from engine.cli.output import fail
from engine.errors import EngineError

DEFAULT_URL = "http://127.0.0.1:8080"
API_PREFIX = "/api/v1"
API_KEY_VARIABLE = "HOOKYARD_API_KEY"
# Long enough for a busy server, short enough that a hung one does not hang a script.
REQUEST_TIMEOUT = 30.0


class ClientError(EngineError):
    """Raised when the CLI cannot get an answer from a Hookyard server."""


class ServerUnreachable(ClientError):
    """Raised when no Hookyard answers at the URL (refused, unknown host, timeout)."""


class ApiError(ClientError):
    """Raised when the server answers with an HTTP status of 400 or more."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"{message} (HTTP {status})")


@dataclass(frozen=True)
class Reply:
    """A decoded JSON answer and the total the server reported for a list."""

    data: Any
    total: int | None = None


class ApiClient:
    """GET, POST, PUT and DELETE JSON under `<url>/api/v1`."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        url = url.rstrip("/")
        # People paste the st2-style API URL too; both mean the same server.
        if url.endswith(API_PREFIX):
            url = url[: -len(API_PREFIX)]
        self.url = url
        self.api_key = api_key or None

    def get(self, path: str, query: Mapping[str, Any] | None = None) -> Reply:
        params = {k: v for k, v in (query or {}).items() if v is not None}
        suffix = "?" + urllib.parse.urlencode(params) if params else ""
        return self._request("GET", path + suffix, None)

    def post(self, path: str, body: Any) -> Reply:
        return self._request("POST", path, json.dumps(body).encode())

    def put(self, path: str, body: Any) -> Reply:
        return self._request("PUT", path, json.dumps(body).encode())

    def patch(self, path: str, body: Any) -> Reply:
        return self._request("PATCH", path, json.dumps(body).encode())

    def delete(self, path: str) -> Reply:
        return self._request("DELETE", path, None)

    def delete_with(self, path: str, body: Any) -> Reply:
        """DELETE with a JSON body (several API keys at once)."""
        return self._request("DELETE", path, json.dumps(body).encode())

    def _request(self, method: str, path: str, body: bytes | None) -> Reply:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["St2-Api-Key"] = self.api_key
        request = urllib.request.Request(
            self.url + API_PREFIX + path, data=body, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
                raw = response.read()
                total = response.headers.get("X-Total-Count")
        except urllib.error.HTTPError as exc:
            message = _fault_message(exc)
            if exc.code == 401 and not self.api_key:
                message += f"; set {API_KEY_VARIABLE} to an API key"
            raise ApiError(exc.code, message) from None
        except urllib.error.URLError as exc:
            raise ServerUnreachable(
                f"cannot reach hookyard at {self.url}: {_reason(exc.reason)}"
            ) from None
        except OSError as exc:  # a timeout or a reset while reading the answer
            raise ServerUnreachable(
                f"cannot reach hookyard at {self.url}: {_reason(exc)}"
            ) from None
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            raise ClientError(
                f"{self.url} answered {method} {path} with something that is not JSON; "
                "is it a Hookyard server?"
            ) from None
        return Reply(data, int(total) if total and total.isdigit() else None)


def _fault_message(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read() or b"null")
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("faultstring"):
        return _one_line(str(body["faultstring"]))
    return f"{error.reason or 'request failed'}: {error.url}"


def _reason(reason: Any) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is `hookyard serve` running there?)"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror})"
    if isinstance(reason, TimeoutError):
        return f"no answer within {REQUEST_TIMEOUT:g} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return _one_line(str(reason))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def server_command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add `--url` and `--json` to a command; pass it an `ApiClient`; ClientError → fail().

    The wrapped function takes `client` and `as_json` in place of the two options.
    """

    @click.option(
        "--url",
        envvar="HOOKYARD_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="Hookyard server (also HOOKYARD_URL); the API key comes from HOOKYARD_API_KEY.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
    @wraps(function)
    def command(*args: Any, url: str, as_json: bool, **kwargs: Any) -> Any:
        client = ApiClient(url, os.environ.get(API_KEY_VARIABLE))
        try:
            return function(*args, client=client, as_json=as_json, **kwargs)
        except ClientError as exc:
            fail(str(exc))

    return command


def path_part(value: str) -> str:
    """One URL path segment: an id or ref with `/` or `?` cannot reach another route."""
    return urllib.parse.quote(value, safe="")
