"""The SSRF guard against the URL forms attackers use, and a real local aiohttp server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from engine.errors import ConfigError, DestinationRefused, OutboundError
from engine.outbound.ssrf import (
    DestinationGuard,
    HostNotResolved,
    parse_legacy_ipv4,
    request_with_checked_redirects,
)

LOOPBACK_FORMS = [
    "http://127.0.0.1",
    "http://[::ffff:127.0.0.1]",
    "http://2130706433",
    "http://0x7f.1",
    "http://0177.0.0.1",
    "http://127.1",
    "http://localhost.",
    "http://localhost",
]
OTHER_FORBIDDEN = [
    "http://169.254.169.254",
    "http://a@10.0.0.1",
    "http://user:pw@0x0a000001:8080/x",
    "http://192.168.1.1",
    "http://172.16.0.1",
    "http://100.64.0.1",  # CGNAT
    "http://224.0.0.1",  # multicast
    "http://0.0.0.0",
    "http://[::]",
    "http://[::1]",
    "http://[fe80::1]",
    "http://[fd00::1]",  # unique local
    "http://[::ffff:169.254.169.254]",
    "http://[2002:a00:1::]",  # 6to4 around 10.0.0.1
    "http://[64:ff9b::7f00:1]",  # NAT64 around 127.0.0.1
    "http://240.0.0.1",  # reserved
]
NOT_HTTP = ["file:///etc/passwd", "gopher://127.0.0.1:70/_x", "ftp://example.com/", "/relative"]


@pytest.mark.parametrize("url", LOOPBACK_FORMS + OTHER_FORBIDDEN + NOT_HTTP)
async def test_forbidden_destinations_are_refused(url):
    with pytest.raises(DestinationRefused):
        await DestinationGuard().check_url(url)


@pytest.mark.parametrize("url", LOOPBACK_FORMS)
async def test_loopback_forms_are_allowed_when_allowlisted_and_rewritten(url):
    destination = await DestinationGuard(["127.0.0.1/32"]).check_url(url)
    assert destination.addresses == ("127.0.0.1",)
    if "localhost" not in url:
        # The URL to request names the address that was checked, in canonical form.
        assert destination.host == "127.0.0.1"
        assert destination.url.startswith("http://127.0.0.1")


async def test_userinfo_never_hides_the_host():
    guard = DestinationGuard(["10.0.0.0/8"])
    destination = await guard.check_url("http://a@10.0.0.1")
    assert (destination.host, destination.addresses) == ("10.0.0.1", ("10.0.0.1",))
    with pytest.raises(DestinationRefused, match=r"10\.0\.0\.1: private"):
        await DestinationGuard().check_url("http://127.0.0.1@10.0.0.1/")


async def test_metadata_address_needs_its_own_allowlist_entry():
    with pytest.raises(DestinationRefused, match="cloud metadata"):
        await DestinationGuard(["127.0.0.1/32"]).check_url("http://169.254.169.254/latest")
    destination = await DestinationGuard(["169.254.169.254/32"]).check_url("http://169.254.169.254")
    assert destination.addresses == ("169.254.169.254",)


@pytest.mark.parametrize("url", NOT_HTTP)
async def test_other_schemes_are_refused_even_with_everything_allowlisted(url):
    with pytest.raises(DestinationRefused, match="only http and https"):
        await DestinationGuard(["0.0.0.0/0", "::/0"]).check_url(url)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("https://93.184.216.34/hook", "93.184.216.34"),
        ("http://[2606:4700:4700::1111]:8443/", "2606:4700:4700::1111"),
        ("http://0x5db8d822/", "93.184.216.34"),
    ],
)
async def test_public_addresses_pass(url, address):
    destination = await DestinationGuard().check_url(url)
    assert destination.addresses == (address,)


def test_one_forbidden_address_among_several_refuses_the_host():
    guard = DestinationGuard()
    assert guard.check_addresses("example.org", ["93.184.216.34"]) == ("93.184.216.34",)
    with pytest.raises(DestinationRefused, match=r"example\.org \(10\.0\.0\.1\)"):
        guard.check_addresses("example.org", ["93.184.216.34", "10.0.0.1"])


@pytest.mark.parametrize(
    ("host", "address"),
    [("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
     ("127.1", "127.0.0.1"), ("10.1.258", "10.1.1.2"), ("0x7F000001", "127.0.0.1"),
     ("example.com", None), ("1.2.3.4", "1.2.3.4")],
)  # fmt: skip
def test_legacy_ipv4_forms_are_normalised_like_inet_aton(host, address):
    parsed = parse_legacy_ipv4(host)
    assert (str(parsed) if parsed else None) == address


@pytest.mark.parametrize("url", ["http://1.2.3.4.5", "http://08.1", "http://256.1.1.1"])
async def test_numeric_hosts_that_are_no_address_are_refused(url):
    with pytest.raises(DestinationRefused, match="looks like an IPv4 address"):
        await DestinationGuard(["0.0.0.0/0"]).check_url(url)


async def test_unresolvable_host_is_a_distinct_error():
    with pytest.raises(HostNotResolved):
        await DestinationGuard().check_url("http://does-not-exist.invalid/")


def test_allowlist_entries_must_be_networks():
    with pytest.raises(ConfigError, match="not-a-cidr"):
        DestinationGuard(["not-a-cidr"])


# --- against a real local server ------------------------------------------------------


@dataclass
class Receiver:
    base: str  # http://127.0.0.1:<port>
    port: int
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # each request's, in order


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = web.Application()
    state: dict[str, Receiver] = {}

    async def record(request: web.Request) -> None:
        state["r"].seen.append((request.method, request.path, request.headers.get("Authorization")))
        state["r"].headers.append({k.lower(): v for k, v in request.headers.items()})

    async def ok(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="ok")

    async def to_metadata(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def to_ok(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPSeeOther("/ok")

    async def to_localhost(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPTemporaryRedirect(f"http://localhost:{state['r'].port}/ok")

    async def loop(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound("/loop")

    app.router.add_route("*", "/ok", ok)
    app.router.add_get("/to-metadata", to_metadata)
    app.router.add_post("/to-ok", to_ok)
    app.router.add_get("/to-localhost", to_localhost)
    app.router.add_get("/loop", loop)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state["r"] = Receiver(base=f"http://127.0.0.1:{port}", port=port)
    try:
        yield state["r"]
    finally:
        await runner.cleanup()


async def test_redirect_to_metadata_address_is_refused(receiver):
    guard = DestinationGuard(["127.0.0.1/32"])
    async with aiohttp.ClientSession(connector=guard.connector()) as session:
        with pytest.raises(DestinationRefused, match=r"169\.254\.169\.254"):
            await request_with_checked_redirects(
                guard, session, "GET", receiver.base + "/to-metadata"
            )
    assert receiver.seen == [("GET", "/to-metadata", None)]


async def test_checked_redirects_are_followed_with_browser_method_rules(receiver):
    guard = DestinationGuard(["127.0.0.1/32"])
    async with aiohttp.ClientSession(connector=guard.connector()) as session:
        response = await request_with_checked_redirects(
            guard, session, "POST", receiver.base + "/to-ok", data=b"payload"
        )
        async with response:
            assert response.status == 200
            assert await response.text() == "ok"
    assert [(method, path) for method, path, _ in receiver.seen] == [
        ("POST", "/to-ok"),
        ("GET", "/ok"),  # 303: the next hop is a GET without the body
    ]


async def test_credentials_are_dropped_when_a_redirect_changes_origin(receiver):
    guard = DestinationGuard(["127.0.0.1/32"])
    async with aiohttp.ClientSession(connector=guard.connector()) as session:
        response = await request_with_checked_redirects(
            guard,
            session,
            "GET",
            receiver.base + "/to-localhost",
            headers={"Authorization": "Bearer t0ken"},
        )
        response.release()
    assert receiver.seen == [("GET", "/to-localhost", "Bearer t0ken"), ("GET", "/ok", None)]


# aiohttp deprecates BasicAuth, yet callers may still pass `auth=`: it must not cross over.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_a_redirect_to_another_origin_keeps_only_safe_headers(receiver):
    guard = DestinationGuard(["127.0.0.1/32"])
    async with aiohttp.ClientSession(connector=guard.connector()) as session:
        response = await request_with_checked_redirects(
            guard,
            session,
            "GET",
            receiver.base + "/to-localhost",
            headers={"X-Api-Key": "k-123", "User-Agent": "hookyard-test"},
            cookies={"session": "c-789"},
            auth=aiohttp.BasicAuth("bob", "pw-1"),
        )
        response.release()
    first, second = receiver.headers
    assert (first["x-api-key"], first["cookie"]) == ("k-123", "session=c-789")
    assert first["authorization"].startswith("Basic ")
    assert "x-api-key" not in second and "cookie" not in second
    assert "authorization" not in second
    assert second["user-agent"] == "hookyard-test"


async def test_redirect_loops_end_with_an_error(receiver):
    guard = DestinationGuard(["127.0.0.1/32"])
    async with aiohttp.ClientSession(connector=guard.connector()) as session:
        with pytest.raises(OutboundError, match="too many redirects"):
            await request_with_checked_redirects(
                guard, session, "GET", receiver.base + "/loop", max_redirects=3
            )
    assert len(receiver.seen) == 4


async def test_guarded_connector_refuses_redirects_aiohttp_follows_itself(receiver):
    # aiohttp never asks the resolver about IP literals; the socket check still refuses.
    guard = DestinationGuard(["127.0.0.1/32"])
    async with aiohttp.ClientSession(connector=guard.connector()) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.get(receiver.base + "/to-metadata")
    assert isinstance(caught.value.os_error, PermissionError)
    assert "169.254.169.254" in str(caught.value)


async def test_guarded_resolver_connects_to_allowlisted_local_server(receiver):
    guard = DestinationGuard(["127.0.0.1/32"])
    connector = aiohttp.TCPConnector(resolver=guard.resolver())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"http://localhost:{receiver.port}/ok") as response,
    ):
        assert response.status == 200
        assert await response.text() == "ok"
    assert receiver.seen == [("GET", "/ok", None)]


async def test_guarded_resolver_refuses_before_connecting(receiver):
    connector = aiohttp.TCPConnector(resolver=DestinationGuard().resolver())
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(DestinationRefused, match="loopback"):
            await session.get(f"http://localhost:{receiver.port}/ok")
    assert receiver.seen == []


async def test_guarded_connector_refuses_a_literal_loopback_url(receiver):
    async with aiohttp.ClientSession(connector=DestinationGuard().connector()) as session:
        with pytest.raises(aiohttp.ClientConnectorError, match="loopback"):
            await session.get(receiver.base + "/ok")
    assert receiver.seen == []


# --- cloud metadata addresses (issue 15 item 11) --------------------------------------------

METADATA_URLS = [
    "http://192.0.0.192/latest",  # Oracle Cloud: neither private nor link-local
    "http://168.63.129.16/machine",  # Azure WireServer: a public address
    "http://[::ffff:192.0.0.192]/",  # IPv4-mapped
    "http://[::ffff:c000:c0]/",  # IPv4-mapped, hex
    "http://[::192.0.0.192]/",  # IPv4-compatible
    "http://[64:ff9b::c000:c0]/",  # NAT64 well-known prefix
    "http://[64:ff9b::a83f:8110]/",  # NAT64 of 168.63.129.16
    "http://[2002:c000:c0::]/",  # 6to4
    "http://[64:ff9b:1::a9fe:a9fe]/",  # NAT64 local-use prefix
    "http://[::169.254.169.254]/",  # IPv4-compatible
    "http://3221225664/",  # 192.0.0.192 as one number
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./",
    "http://instance-data/latest/",
]
# Already refused before (link-local, unique-local or CGNAT); kept refused.
KNOWN_METADATA_URLS = [
    "http://169.254.169.254/",
    "http://[fd00:ec2::254]/",
    "http://169.254.170.2/v2/credentials",
    "http://100.100.100.200/latest/meta-data/",
    "http://169.254.169.123/",
    "http://169.254.169.253/",
    "http://[fd20:ce::254]/",
]


@pytest.mark.parametrize("url", METADATA_URLS + KNOWN_METADATA_URLS)
async def test_cloud_metadata_addresses_are_refused(url):
    with pytest.raises(DestinationRefused, match=r"metadata|NAT64"):
        await DestinationGuard().check_url(url)


@pytest.mark.parametrize(
    ("url", "network"),
    [
        ("http://100.100.100.200/", "100.64.0.0/10"),
        ("http://169.254.169.254/", "169.254.0.0/16"),
        ("http://192.0.0.192/", "192.0.0.0/24"),
        ("http://[fd00:ec2::254]/", "fd00::/8"),
        ("http://[64:ff9b::c000:c0]/", "64:ff9b::/96"),
        ("http://192.0.0.192/", "0.0.0.0/0"),
    ],
)
async def test_a_wider_allowlisted_network_does_not_open_a_metadata_address(url, network):
    with pytest.raises(DestinationRefused, match=r"metadata.*alone"):
        await DestinationGuard([network]).check_url(url)


async def test_a_metadata_address_opens_with_an_entry_of_its_own():
    destination = await DestinationGuard(["192.0.0.192/32"]).check_url("http://192.0.0.192/x")
    assert destination.addresses == ("192.0.0.192",)
    # Other addresses of a wide entry still pass.
    destination = await DestinationGuard(["100.64.0.0/10"]).check_url("http://100.64.0.1/")
    assert destination.addresses == ("100.64.0.1",)
