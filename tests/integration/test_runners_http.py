"""http-request against a real aiohttp server on 127.0.0.1 (ephemeral port)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from engine.errors import DestinationRefused
from engine.outbound.ssrf import DestinationGuard as SsrfGuard
from engine.runners import RunRequest, default_runners, get_runner
from engine.runners.http_request import HttpRequestRunner

SEEN = web.AppKey("seen", list)
HEARD = web.AppKey("heard", list)


async def record_everything(request: web.Request) -> web.Response:
    request.app[HEARD].append(
        {
            "path": request.path,
            "host": request.host,
            "url": str(request.url),
            "headers": dict(request.headers),
            "cookies": dict(request.cookies),
        }
    )
    return web.json_response({"ok": True})


async def redirect_elsewhere(request: web.Request) -> web.Response:
    request.app[SEEN].append(request.path)
    raise web.HTTPTemporaryRedirect(request.query["to"])


async def echo(request: web.Request) -> web.Response:
    request.app[SEEN].append(request.path)
    return web.json_response(
        {
            "method": request.method,
            "query": dict(request.query),
            "body": await request.text(),
            "content_type": request.headers.get("Content-Type"),
            "authorization": request.headers.get("Authorization"),
        }
    )


async def text(request: web.Request) -> web.Response:
    return web.Response(text="plain words", headers={"X-Custom": "yes"})


async def broken(request: web.Request) -> web.Response:
    return web.json_response({"problem": "nope"}, status=503)


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="late")


async def redirect(request: web.Request) -> web.Response:
    request.app[SEEN].append(request.path)
    raise web.HTTPFound("/echo")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, web.Application]]:
    app = web.Application()
    app[SEEN] = []
    app[HEARD] = []
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/text", text)
    app.router.add_get("/broken", broken)
    app.router.add_get("/slow", slow)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/elsewhere", redirect_elsewhere)
    app.router.add_get("/landing", record_everything)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", app
    await runner.cleanup()


def make_request(
    runner_parameters: dict[str, Any],
    action_parameters: dict[str, Any] | None = None,
    *,
    timeout: float = 10.0,
    secrets: frozenset[str] = frozenset(),
) -> RunRequest:
    return RunRequest(
        execution_id="exec-" + uuid.uuid4().hex[:8],
        runner_parameters=runner_parameters,
        action_parameters=action_parameters or {},
        entry_point=None,
        parameter_positions={},
        secret_parameters=secrets,
        timeout=timeout,
        action_config={},
    )


async def run(request: RunRequest):
    return await get_runner("http-request").run(request)


async def test_get_with_query_parses_json_response(server):
    base, _ = server
    result = await run(make_request({"url": base + "/echo"}, {"params": {"q": "1 2"}}))
    assert result.status == "succeeded"
    assert result.result["status_code"] == 200
    assert result.result["parsed"] is True
    assert result.result["body"]["method"] == "GET"
    assert result.result["body"]["query"] == {"q": "1 2"}
    assert result.result["headers"]["Content-Type"].startswith("application/json")


async def test_post_dict_body_is_sent_as_json(server):
    base, _ = server
    result = await run(
        make_request({"url": base + "/echo"}, {"method": "POST", "body": {"a": [1, 2]}})
    )
    assert result.status == "succeeded"
    assert result.result["body"]["method"] == "POST"
    assert result.result["body"]["body"] == '{"a": [1, 2]}'
    assert result.result["body"]["content_type"] == "application/json"


async def test_string_body_and_basic_auth(server):
    base, _ = server
    result = await run(
        make_request(
            {"url": base + "/echo", "username": "bob", "password": "pw-secret-1"},
            {"method": "PUT", "body": "raw text"},
        )
    )
    assert result.result["body"]["body"] == "raw text"
    assert result.result["body"]["authorization"] == "Basic Ym9iOnB3LXNlY3JldC0x"


async def test_text_response_is_not_parsed(server):
    base, _ = server
    result = await run(make_request({"url": base + "/text"}))
    assert result.status == "succeeded"
    assert (result.result["body"], result.result["parsed"]) == ("plain words", False)
    assert result.result["headers"]["X-Custom"] == "yes"


async def test_non_2xx_fails_with_the_response(server):
    base, _ = server
    result = await run(make_request({"url": base + "/broken"}))
    assert result.status == "failed"
    assert result.result["status_code"] == 503
    assert result.result["body"] == {"problem": "nope"}


async def test_connection_refused_fails_with_an_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        result = await run(make_request({"url": f"http://127.0.0.1:{port}/"}))
    assert result.status == "failed"
    assert result.result["error"].startswith(f"cannot connect to 127.0.0.1:{port}")


async def test_slow_server_times_out(server):
    base, _ = server
    result = await run(make_request({"url": base + "/slow"}, timeout=0.5))
    assert result.status == "timeout"
    assert "0.5 seconds" in result.result["error"]


async def test_redirects_are_not_followed_by_default(server):
    base, app = server
    result = await run(make_request({"url": base + "/redirect"}))
    assert result.status == "failed"
    assert result.result["status_code"] == 302
    assert app[SEEN] == ["/redirect"]


async def test_followed_redirects_pass_the_guard_on_every_hop(server):
    base, app = server
    checked: list[str] = []

    async def guard(url: str) -> None:
        checked.append(url)

    runner = HttpRequestRunner(destination_guard=guard)
    result = await runner.run(make_request({"url": base + "/redirect", "allow_redirects": True}))
    assert result.status == "succeeded"
    assert result.result["body"]["method"] == "GET"
    assert checked == [base + "/redirect", base + "/echo"]
    assert app[SEEN] == ["/redirect", "/echo"]


async def test_refused_destination_fails_without_a_request(server):
    base, app = server

    async def guard(url: str) -> None:
        raise DestinationRefused(f"{url} resolves to a loopback address")

    runner = HttpRequestRunner(destination_guard=guard)
    result = await runner.run(make_request({"url": base + "/echo"}))
    assert result.status == "failed"
    assert "loopback" in result.result["error"]
    assert app[SEEN] == []


async def test_host_blacklist_refuses(server):
    base, app = server
    result = await run(make_request({"url": base + "/echo", "url_hosts_blacklist": ["127.0.0.1"]}))
    assert result.status == "failed"
    assert "blacklisted" in result.result["error"]
    assert app[SEEN] == []


async def test_secret_values_echoed_back_are_masked(server):
    base, _ = server
    result = await run(
        make_request(
            {"url": base + "/echo"},
            {"params": {"token": "tok-abcdef"}},
            secrets=frozenset({"params"}),
        )
    )
    assert result.result["body"]["query"] == {"token": "********"}


async def test_invalid_url_fails_cleanly():
    result = await run(make_request({"url": "not a url"}))
    assert result.status == "failed"
    assert result.result["error"]


async def test_ssrf_guard_refuses_loopback_by_url_and_at_connect_time(server):
    base, app = server
    guard = SsrfGuard()
    registry = default_runners(guard.check_url, guard.connector)
    result = await registry.get("http-request").run(make_request({"url": base + "/echo"}))
    assert result.status == "failed"
    assert "refusing" in result.result["error"]
    # Connect-time check alone (no URL check): the guarded connector still refuses.
    runner = HttpRequestRunner(connector_factory=guard.connector)
    result = await runner.run(make_request({"url": base + "/echo"}))
    assert result.status == "failed"
    assert "refusing" in result.result["error"]
    assert app[SEEN] == []
    allowed = SsrfGuard(allow_private=["127.0.0.0/8"])
    result = (
        await default_runners(allowed.check_url, allowed.connector)
        .get("http-request")
        .run(make_request({"url": base + "/echo"}))
    )
    assert result.status == "succeeded"


# --- cross-origin redirects and proxies ---------------------------------------------------


@pytest.fixture
async def other_origin() -> AsyncIterator[tuple[str, web.Application]]:
    """A second server, reached as `localhost` (another origin than 127.0.0.1:<port>)."""
    app = web.Application()
    app[HEARD] = []
    app.router.add_route("*", "/{tail:.*}", record_everything)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://localhost:{runner.addresses[0][1]}", app
    await runner.cleanup()


async def allow_everything(url: str) -> None:
    return None


async def test_cross_origin_redirect_sends_no_header_cookie_or_credential_of_the_action(
    server, other_origin
):
    base, _ = server
    target, other = other_origin
    runner = HttpRequestRunner(destination_guard=allow_everything)
    result = await runner.run(
        make_request(
            {
                "url": base + "/elsewhere",
                "allow_redirects": True,
                "headers": {"X-Api-Key": "k-123", "Authorization": "Bearer b-456"},
                "cookies": {"session": "c-789"},
                "username": "bob",
                "password": "pw-1",
            },
            {"params": {"to": target + "/landing"}},
        )
    )
    assert result.status == "succeeded", result.result
    [heard] = other[HEARD]
    assert heard["path"] == "/landing"
    sent = {name.lower(): value for name, value in heard["headers"].items()}
    assert "x-api-key" not in sent and "authorization" not in sent and "cookie" not in sent
    assert heard["cookies"] == {}
    assert sent["user-agent"] == "Hookyard"
    basic = "Ym9iOnB3LTE="  # bob:pw-1
    assert not [secret for secret in ("k-123", "b-456", "c-789", basic) if secret in str(heard)]


async def test_same_origin_redirect_keeps_the_actions_headers_and_cookies(server):
    base, app = server
    runner = HttpRequestRunner(destination_guard=allow_everything)
    result = await runner.run(
        make_request(
            {
                "url": base + "/elsewhere",
                "allow_redirects": True,
                "headers": {"X-Api-Key": "k-123"},
                "cookies": {"session": "c-789"},
            },
            {"params": {"to": base + "/landing"}},
        )
    )
    assert result.status == "succeeded", result.result
    [heard] = app[HEARD]
    assert heard["headers"]["X-Api-Key"] == "k-123"
    assert heard["cookies"] == {"session": "c-789"}


@pytest.mark.parametrize("parameter", ["http_proxy", "https_proxy"])
async def test_a_proxy_is_refused_while_the_destination_guard_is_on(
    server, other_origin, parameter
):
    base, app = server
    proxy, other = other_origin
    runner = HttpRequestRunner(destination_guard=allow_everything)
    result = await runner.run(make_request({"url": base + "/echo", parameter: proxy}))
    assert result.status == "failed"
    assert repr(parameter) in result.result["error"] and "proxies" in result.result["error"]
    assert app[SEEN] == [] and other[HEARD] == []
    # The real SSRF guard, allowing loopback, refuses it just the same.
    allowed = SsrfGuard(allow_private=["127.0.0.0/8"])
    guarded = default_runners(allowed.check_url, allowed.connector).get("http-request")
    result = await guarded.run(make_request({"url": base + "/echo", parameter: proxy}))
    assert result.status == "failed" and repr(parameter) in result.result["error"]
    assert app[SEEN] == [] and other[HEARD] == []


async def test_a_proxy_is_used_by_a_runner_without_a_guard(other_origin):
    proxy, other = other_origin
    runner = HttpRequestRunner()
    result = await runner.run(
        make_request({"url": "http://unreachable.invalid/through", "http_proxy": proxy})
    )
    assert result.status == "succeeded", result.result
    [heard] = other[HEARD]
    assert heard["path"] == "/through" and heard["host"] == "unreachable.invalid"
