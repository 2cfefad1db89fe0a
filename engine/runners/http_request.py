"""The ``http-request`` runner: one HTTP request with aiohttp, StackStorm's result shape.

Result ``{"status_code", "headers", "body", "parsed"}``: the body is decoded JSON when the
response says it is JSON (``parsed`` true), else text. 2xx is ``succeeded``, any other
status ``failed``; an unreachable host is ``failed`` and a slow one ``timeout``, each with an
``error`` string. aiohttp exceptions never leave this module.

Redirects are followed here, not by aiohttp, so that every hop passes the destination
guard (the SSRF check) and nothing the action set is sent on to another origin: a
cross-origin hop carries only the safe default headers, no cookies, no credentials.

Proxies (``http_proxy``/``https_proxy``) are refused while a destination guard is active:
through a proxy the guard could only check the proxy's address, never where the proxy
connects. They work with a runner built without a guard.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from multidict import CIMultiDict

from engine.errors import EngineError, RunnerError
from engine.runners.base import (
    FAILED,
    SUCCEEDED,
    TIMEOUT,
    DestinationGuard,
    RunRequest,
    RunResult,
    mask_secrets,
)

DEFAULT_TIMEOUT = 60.0
MAX_REDIRECTS = 10
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}
_READ_CHUNK = 65536
_USER_AGENT = "Hookyard"
# What a cross-origin redirect hop keeps of the request's headers: none that can carry a
# credential (as engine.outbound.ssrf.SAFE_REDIRECT_HEADERS).
_SAFE_REDIRECT_HEADERS = frozenset({"user-agent", "accept", "accept-language", "content-type"})
_PROXY_PARAMETERS = ("http_proxy", "https_proxy")


class HttpRequestRunner:
    name = "http-request"
    # Facts from StackStorm's http_runner/runner.yaml. method, body, params, timeout and
    # auth are action parameters there (declared by core.http); they are read from either.
    parameters = {
        "url": {"type": "string", "required": True, "description": "URL to request."},
        "headers": {"type": "object", "description": "HTTP headers for the request."},
        "cookies": {"type": "object", "description": "Cookies to send with the request."},
        "allow_redirects": {
            "type": "boolean",
            "default": False,
            "description": "Follow redirects (each hop is checked again).",
        },
        "verify_ssl_cert": {
            "type": "boolean",
            "default": True,
            "description": "Verify the server's TLS certificate; false skips verification.",
        },
        "username": {"type": "string", "description": "User name for basic authentication."},
        "password": {
            "type": "string",
            "secret": True,
            "description": "Password for basic authentication.",
        },
        "http_proxy": {"type": "string", "description": "Proxy URL for http:// requests."},
        "https_proxy": {"type": "string", "description": "Proxy URL for https:// requests."},
        "url_hosts_blacklist": {
            "type": "array",
            "items": {"type": "string"},
            "required": False,
            "description": "Hosts this action may not request.",
        },
        "url_hosts_whitelist": {
            "type": "array",
            "items": {"type": "string"},
            "required": False,
            "description": "If set, the only hosts this action may request.",
        },
    }

    def __init__(
        self,
        destination_guard: DestinationGuard | None = None,
        connector_factory: Callable[[], aiohttp.BaseConnector] | None = None,
    ) -> None:
        self._destination_guard = destination_guard
        # A fresh connector per run, e.g. the SSRF guard's, which re-checks every address
        # at connect time (a URL check alone is open to DNS rebinding).
        self._connector_factory = connector_factory

    async def run(self, request: RunRequest) -> RunResult:
        guard = request.destination_guard or self._destination_guard
        try:
            async with asyncio.timeout(request.timeout):
                result = await self._request(request, guard)
        except TimeoutError:
            result = RunResult(
                TIMEOUT, {"error": f"no response within {request.timeout:g} seconds"}
            )
        except EngineError as exc:  # RunnerError, DestinationRefused from the guard...
            result = RunResult(FAILED, {"error": str(exc)})
        except aiohttp.ClientError as exc:
            result = RunResult(FAILED, {"error": _describe_client_error(exc)})
        except ValueError as exc:  # aiohttp's answer to malformed headers, URLs, bodies
            result = RunResult(FAILED, {"error": f"invalid request: {exc}"})
        return RunResult(result.status, mask_secrets(result.result, request.secret_values()))

    async def _request(self, request: RunRequest, guard: DestinationGuard | None) -> RunResult:
        url = request.parameter("url")
        if not isinstance(url, str) or not url:
            raise RunnerError("http-request needs a 'url' parameter")
        if guard is not None or self._connector_factory is not None:
            for name in _PROXY_PARAMETERS:
                if request.parameter(name):
                    raise RunnerError(
                        f"parameter {name!r}: proxies are refused while the outbound "
                        "destination guard is on, because it could check only the proxy's "
                        "address and not where the proxy connects; remove the parameter"
                    )
        method = str(request.parameter("method", "GET")).upper()
        headers = CIMultiDict(
            {str(k): str(v) for k, v in (request.parameter("headers") or {}).items()}
        )
        headers.setdefault("User-Agent", _USER_AGENT)
        data = _encode_body(request.parameter("body"), headers)
        authorization = _basic_authorization(request)
        if authorization is not None:
            headers["Authorization"] = authorization
        allow_redirects = bool(request.parameter("allow_redirects", False))
        verify = bool(request.parameter("verify_ssl_cert", True))
        timeout = aiohttp.ClientTimeout(total=float(request.timeout))
        query = request.parameter("params") or None
        # Sent with each request rather than kept in the session's jar, so that they stop
        # at the first hop to another origin.
        cookies = request.parameter("cookies") or None

        connector = self._connector_factory() if self._connector_factory else None
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for _hop in range(MAX_REDIRECTS + 1):
                await _check_destination(url, request, guard)
                async with session.request(
                    method,
                    url,
                    params=query,
                    data=data,
                    headers=headers,
                    cookies=cookies,
                    allow_redirects=False,
                    ssl=verify,
                    proxy=_proxy_for(url, request),
                ) as response:
                    location = response.headers.get("Location")
                    if allow_redirects and response.status in _REDIRECT_STATUSES and location:
                        next_url = urljoin(url, location)
                        if _origin(next_url) != _origin(url):
                            # Headers, cookies and credentials are for the origin the action
                            # configured them for; another origin gets only safe defaults.
                            headers = CIMultiDict(
                                (name, value)
                                for name, value in headers.items()
                                if name.lower() in _SAFE_REDIRECT_HEADERS
                            )
                            cookies = None
                        # As browsers and requests do: 303 always, and 301/302 after a
                        # POST, repeat as a GET without the body.
                        if response.status == 303 or (
                            response.status in (301, 302) and method == "POST"
                        ):
                            method, data = "GET", None
                            headers.popall("Content-Type", None)
                        # The Location carries its own query string.
                        url, query = next_url, None
                        continue
                    return await _read_response(response, request.max_output)
        raise RunnerError(f"more than {MAX_REDIRECTS} redirects, last to {url}")


async def _check_destination(url: str, request: RunRequest, guard: DestinationGuard | None) -> None:
    host = (urlsplit(url).hostname or "").lower()
    blocked = [h.lower() for h in request.parameter("url_hosts_blacklist") or []]
    allowed = [h.lower() for h in request.parameter("url_hosts_whitelist") or []]
    if blocked and allowed:
        raise RunnerError(
            '"url_hosts_blacklist" and "url_hosts_whitelist" are mutually exclusive; give one'
        )
    if host in blocked:
        raise RunnerError(f'URL "{url}" is blacklisted')
    if allowed and host not in allowed:
        raise RunnerError(f'URL "{url}" is not whitelisted')
    if guard is not None:
        await guard(url)


def _encode_body(body: Any, headers: CIMultiDict) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, dict | list):
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(body).encode()
    return str(body).encode()


def _basic_authorization(request: RunRequest) -> str | None:
    username = request.parameter("username")
    password = request.parameter("password")
    if username is None and password is None:
        return None
    credentials = f"{username or ''}:{password or ''}"
    try:
        # Latin-1 as requests (and so StackStorm) sends it; UTF-8 when it cannot hold it.
        raw = credentials.encode("latin-1")
    except UnicodeEncodeError:
        raw = credentials.encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _proxy_for(url: str, request: RunRequest) -> str | None:
    scheme = urlsplit(url).scheme.lower()
    return request.parameter("https_proxy" if scheme == "https" else "http_proxy") or None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def _read_response(response: aiohttp.ClientResponse, max_output: int) -> RunResult:
    raw = bytearray()
    truncated = False
    while chunk := await response.content.read(_READ_CHUNK):
        room = max_output - len(raw)
        if room > 0:
            raw += chunk[:room]
        if len(chunk) > room:
            truncated = True
            break  # the rest is not needed; closing the response drops the connection
    try:
        text = bytes(raw).decode(response.charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        text = bytes(raw).decode("utf-8", errors="replace")
    body: Any = text
    parsed = False
    if not truncated and _is_json(response.headers.get("Content-Type", "")):
        try:
            body = json.loads(text)
            parsed = True
        except ValueError:
            pass  # served as JSON but is not: keep the text, parsed stays false
    headers: dict[str, str] = {}
    for name, value in response.headers.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    result: dict[str, Any] = {
        "status_code": response.status,
        "headers": headers,
        "body": body,
        "parsed": parsed,
    }
    if truncated:
        result["body_truncated"] = True
    return RunResult(SUCCEEDED if 200 <= response.status < 300 else FAILED, result)


def _describe_client_error(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL: {exc.url}"
    return f"{type(exc).__name__}: {exc}"
