"""The fast ingest path: SQLite group commits on the event loop (handed to the writer
thread when another connection holds the write lock), the body JSON stored as the sender
wrote it, guarded routes with JSON 404/405, and webhook counts exported at scrape.

Real parts only: a SQLite file under tmp_path, plain sqlite3 connections holding its write
lock, and the real app behind aiohttp's test server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from engine.config import IngestSettings, Settings, StoreSettings
from engine.errors import StoreBusy
from engine.http.app import create_app
from engine.http.context import RUNTIME
from engine.http.guard import check_all_guarded, guarded
from engine.model.apikeys import new_api_key
from engine.model.records import NewTriggerInstance
from tests.support.app import settings_for
from tests.support.packs import noop_rule

ANY_RULE = noop_rule("anything")
NESTED_RULE = """\
name: nested
pack: t
trigger: {type: core.st2.webhook, parameters: {url: team/alerts}}
action: {ref: core.noop}
"""

# --- the store: on the loop, or the writer thread when the file is locked ----------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "hookyard.db"


@pytest.fixture
def store_url(db_path: Path) -> str:
    """SQLite only here (overrides conftest's store_url): these tests lock its file."""
    return f"sqlite:///{db_path}"


@pytest.fixture
def open_sqlite(open_store):
    return open_store


@pytest.fixture
def blocker(db_path: Path):
    """A plain connection of another "process" to the same file (opened after the store)."""
    conns: list[sqlite3.Connection] = []

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        conns.append(conn)
        return conn

    yield connect
    for conn in conns:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def instance(n: int = 0) -> NewTriggerInstance:
    return NewTriggerInstance(
        trigger="core.st2.webhook",
        payload={"headers": {}, "headers_lower": {}, "body": {"n": n, "s": "é"}},
        webhook="anything",
    )


async def test_fast_path_stores_without_a_competing_writer(open_sqlite) -> None:
    store = await open_sqlite()
    items = [instance(n) for n in range(20)]
    answers = await asyncio.gather(*(store.add_trigger_instance(item) for item in items))
    assert [a.id for a in answers] == [item.id for item in items]
    page = await store.list_trigger_instances({}, limit=100, offset=0)
    assert page.total == 20
    stored = await store.get_trigger_instance(items[7].id)
    assert stored.payload == items[7].payload and stored.webhook == "anything"


async def test_a_batch_of_large_bodies_is_written_and_waits_for_the_lock_too(
    open_sqlite, blocker
) -> None:
    """Over 256 KiB a group commit goes to the writer thread (not the loop): it is stored
    alike, and waits for another connection's write lock like any other."""
    store = await open_sqlite(busy_timeout=10.0)
    big = [
        NewTriggerInstance(trigger="core.st2.webhook", payload={"blob": "x" * 200_000, "n": n})
        for n in range(3)
    ]
    conn = blocker()
    conn.execute("BEGIN IMMEDIATE")
    task = asyncio.ensure_future(store.add_trigger_instances(big))
    await asyncio.sleep(0.3)
    assert not task.done()
    conn.execute("COMMIT")
    answers = await asyncio.wait_for(task, 10)
    assert [a.id for a in answers] == [item.id for item in big]
    stored = await store.get_trigger_instance(big[2].id)
    assert stored.payload == {"blob": "x" * 200_000, "n": 2}


async def test_add_waits_for_another_connections_write_lock_without_blocking_the_loop(
    open_sqlite, blocker
) -> None:
    store = await open_sqlite(busy_timeout=10.0)
    other = blocker()
    other.execute("BEGIN IMMEDIATE")  # holds the file's write lock
    other.execute("SELECT 1 FROM trigger_instances LIMIT 1").fetchall()

    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(loop.time())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    item = instance(1)
    adding = asyncio.create_task(store.add_trigger_instance(item))
    done, _ = await asyncio.wait({adding}, timeout=0.5)
    assert not done, "the add must wait for the lock, not fail or skip it"
    ticker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ticker
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 5 and max(gaps) < 0.3, "the event loop must not wait for the lock"
    # Readers are not held up by the writer lock (WAL).
    assert (await store.list_trigger_instances({}, limit=10, offset=0)).total == 0

    other.execute("COMMIT")
    accepted = await asyncio.wait_for(adding, 10)
    assert accepted.id == item.id and accepted.duplicate is False
    stored = await store.get_trigger_instance(item.id)
    assert stored.payload == item.payload
    assert stored.status == "pending"
    # Taken on the loop again once the lock is free.
    follow = instance(2)
    assert (await store.add_trigger_instance(follow)).id == follow.id
    assert (await store.list_trigger_instances({}, limit=10, offset=0)).total == 2


async def test_several_waiting_adds_all_land_once_the_lock_is_released(
    open_sqlite, blocker
) -> None:
    store = await open_sqlite(busy_timeout=10.0)
    other = blocker()
    other.execute("BEGIN IMMEDIATE")
    items = [instance(n) for n in range(10)]
    adding = [asyncio.create_task(store.add_trigger_instance(item)) for item in items]
    done, _ = await asyncio.wait(adding, timeout=0.3)
    assert not done
    other.execute("COMMIT")
    answers = await asyncio.wait_for(asyncio.gather(*adding), 10)
    assert [a.id for a in answers] == [item.id for item in items]
    page = await store.list_trigger_instances({}, limit=100, offset=0)
    assert sorted(i.id for i in page.items) == sorted(item.id for item in items)


async def test_a_lock_held_past_busy_timeout_is_store_busy_and_nothing_is_stored(
    open_sqlite, blocker
) -> None:
    store = await open_sqlite(busy_timeout=0.3)
    other = blocker()
    other.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    began = loop.time()
    item = instance(3)
    with pytest.raises(StoreBusy):
        await asyncio.wait_for(store.add_trigger_instance(item), 10)
    waited = loop.time() - began
    assert waited >= 0.25, f"gave up after {waited:.3f}s, before busy_timeout"
    assert waited < 5
    other.execute("COMMIT")
    page = await store.list_trigger_instances({}, limit=10, offset=0)
    assert page.total == 0
    # The refused item was not written late either, and the store still takes writes.
    after = instance(4)
    assert (await store.add_trigger_instance(after)).id == after.id
    page = await store.list_trigger_instances({}, limit=10, offset=0)
    assert [i.id for i in page.items] == [after.id]


# --- the app ---------------------------------------------------------------------------------


def fast_path_settings(tmp_path: Path, *, auth: bool = False, **ingest) -> Settings:
    return settings_for(
        tmp_path,
        rules={"any": ANY_RULE, "nested": NESTED_RULE},
        auth=auth,
        ingest=IngestSettings(**ingest),
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return fast_path_settings(tmp_path)


async def post_json(client: TestClient, body: bytes, path: str = "/webhooks/anything"):
    return await client.post(
        path,
        data=body,
        headers={"Content-Type": "application/json"},
        skip_auto_headers=["Content-Type"],
    )


async def stored_body(client: TestClient, instance_id: str):
    response = await client.get(f"/api/v1/triggerinstances/{instance_id}")
    assert response.status == 200
    return (await response.json())["payload"]["body"]


async def total(client: TestClient) -> int:
    response = await client.get("/api/v1/triggerinstances")
    assert response.status == 200
    return int(response.headers["X-Total-Count"])


def stored_payload_text(tmp_path: Path, instance_id: str) -> str:
    with sqlite3.connect(tmp_path / "hookyard.db") as conn:
        (text,) = conn.execute(
            "SELECT payload FROM trigger_instances WHERE id = ?", (instance_id,)
        ).fetchone()
    conn.close()
    return text


ODD_BODY = (
    '  {\n\t"name" :  "café \U0001f600 \\u00e9\\n\\"q\\"" ,'
    '"nested":[ [1,[2, [3, []]]] ,{"a" : [ {}, null, true, false]} ],\r\n'
    f'  "big": {2**70}, "neg_big": -{2**70}, "float": 15000000000.5, "tiny": 0.25,'
    '  "neg_zero": -0.0, "exp": 100.0 , "empty": "" }  \n'
)


async def test_json_body_is_stored_as_the_sender_wrote_it(client, tmp_path) -> None:
    response = await post_json(client, ODD_BODY.encode())
    assert response.status == 202, await response.text()
    instance_id = (await response.json())["id"]
    expected = json.loads(ODD_BODY)
    body = await stored_body(client, instance_id)
    assert body == expected
    assert body["big"] == 2**70 and isinstance(body["big"], int)
    assert body["neg_big"] == -(2**70)
    assert body["float"] == 15000000000.5 and isinstance(body["float"], float)
    assert body["name"] == 'café \U0001f600 é\n"q"'
    # The sender's own text, not a re-encoding of it.
    stored = stored_payload_text(tmp_path, instance_id)
    assert ODD_BODY in stored
    assert json.loads(stored)["body"] == expected


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2, [3, [4]]]",
        b'"just a string \xc3\xa9"',
        b"12345678901234567890123456789",
        b"-1.5e-10",
        b"null",
        b"true",
        b'{"k": {"k": {"k": "\\ud83d\\ude00"}}}',
    ],
)
async def test_any_json_root_round_trips(client, body) -> None:
    response = await post_json(client, body)
    assert response.status == 202, await response.text()
    assert await stored_body(client, (await response.json())["id"]) == json.loads(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"x": 1e400}',
        b'{"x": -1e400}',
        b"[1E999]",
        b'{"x": NaN}',
        b'{"x": Infinity}',
        b"-Infinity",
    ],
)
async def test_unstorable_numbers_are_400_and_nothing_is_stored(client, body) -> None:
    response = await post_json(client, body)
    assert response.status == 400
    assert "cannot be stored" in (await response.json())["faultstring"]
    assert await total(client) == 0


async def test_integer_with_too_many_digits_is_a_json_400(client) -> None:
    response = await post_json(client, b'{"n": ' + b"1" * 5000 + b"}")
    assert await total(client) == 0
    assert response.status == 400
    assert "faultstring" in await response.json()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])
async def test_json_in_other_unicode_encodings_is_stored_decoded(client, encoding) -> None:
    text = '{"name": "café \U0001f600", "list": [1, 2.5, {"deep": [null]}], "big": 2e300}'
    raw = text.encode(encoding)
    if encoding in ("utf-16", "utf-32", "utf-8-sig"):
        assert raw[:2] in (b"\xff\xfe", b"\xfe\xff", b"\xef\xbb")  # with a BOM
    response = await post_json(client, raw)
    assert response.status == 202, await response.text()
    assert await stored_body(client, (await response.json())["id"]) == json.loads(text)


async def test_ascii_json_in_utf16_without_a_bom_is_accepted(client) -> None:
    for encoding in ("utf-16-le", "utf-16-be", "utf-32-le"):
        response = await post_json(client, '{"a": 1}'.encode(encoding))
        assert response.status == 202, (encoding, await response.text())
        assert await stored_body(client, (await response.json())["id"]) == {"a": 1}


async def test_numbers_with_exponents_are_stored_as_their_value_not_their_text(
    client, tmp_path
) -> None:
    # 1e-16000 reads as 0.0; its text would make PostgreSQL keep 16,000 digits.
    raw = b'{"tiny": 1e-16000, "hundred": 1E2, "long": 0.10000000000000000555111512312578270211}'
    response = await post_json(client, raw)
    assert response.status == 202
    instance_id = (await response.json())["id"]
    assert await stored_body(client, instance_id) == {"tiny": 0.0, "hundred": 100.0, "long": 0.1}
    stored = stored_payload_text(tmp_path, instance_id)
    assert "16000" not in stored and "1E2" not in stored and "0555" not in stored


async def test_escaped_nul_inside_a_string_is_refused(client) -> None:
    response = await post_json(client, b'{"s": "a\\u0000b"}')
    assert response.status == 400
    assert "NUL" in (await response.json())["faultstring"]
    # An escaped backslash, then an escaped NUL: still a NUL.
    response = await post_json(client, b'{"s": "a\\\\\\u0000b"}')
    assert response.status == 400
    assert await total(client) == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"s": "a\\\\u0000b"}',  # a backslash, then the letters u0000
        b'{"s": "\\\\\\\\u0000", "t": ["\\\\u0000"]}',
        b'{"a\\\\u0000": 1}',
    ],
)
async def test_escaped_backslash_before_u0000_is_accepted_and_stored_exactly(
    client, tmp_path, body
) -> None:
    response = await post_json(client, body)
    assert response.status == 202, await response.text()
    instance_id = (await response.json())["id"]
    expected = json.loads(body)
    assert await stored_body(client, instance_id) == expected
    assert json.loads(stored_payload_text(tmp_path, instance_id))["body"] == expected


async def test_body_read_back_through_the_store_matches_what_the_handler_saw(client) -> None:
    """The payload around the spliced body (headers) is intact JSON as well."""
    response = await client.post(
        "/webhooks/anything",
        data=b' {"x": [1, 2]} ',
        headers={"Content-Type": "application/json", "X-Odd": 'quote " and \\ back'},
        skip_auto_headers=["Content-Type"],
    )
    assert response.status == 202
    instance = await (
        await client.get(f"/api/v1/triggerinstances/{(await response.json())['id']}")
    ).json()
    assert instance["payload"]["body"] == {"x": [1, 2]}
    assert instance["payload"]["headers"]["X-Odd"] == 'quote " and \\ back'
    assert instance["payload"]["headers_lower"]["x-odd"] == 'quote " and \\ back'


# --- guarded routes, 404 and 405 ----------------------------------------------------------------


def test_check_all_guarded_refuses_an_unwrapped_route() -> None:
    async def bare(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/bare", bare)
    with pytest.raises(RuntimeError, match="/bare"):
        check_all_guarded(app, unguarded=set())
    check_all_guarded(app, unguarded={bare})  # allowed when listed


def test_check_all_guarded_accepts_wrapped_routes() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/wrapped", guarded(handler))
    app.router.add_post("/other", guarded(handler))
    check_all_guarded(app, unguarded=set())


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/health", {"GET", "HEAD"}),
        ("POST", "/ready", {"GET", "HEAD"}),
        ("GET", "/webhooks/x", {"POST"}),
        ("PUT", "/api/v1/webhooks/anything", {"POST", "GET", "HEAD"}),
        ("DELETE", "/metrics", {"GET", "HEAD"}),
    ],
)
async def test_wrong_method_is_json_405_with_allow(client, method, path, allowed) -> None:
    response = await client.request(method, path)
    assert response.status == 405
    assert response.content_type == "application/json"
    assert set(response.headers["Allow"].split(",")) == allowed
    error = await response.json()
    assert "Method Not Allowed" in error["faultstring"]
    assert method in error["faultstring"]


async def test_unknown_path_is_json_404(client) -> None:
    response = await client.get("/no/such/thing")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert "Not Found" in (await response.json())["faultstring"]
    assert "Allow" not in response.headers


async def test_api_needs_a_key_when_auth_is_enabled(tmp_path, capsys) -> None:
    async with TestClient(TestServer(create_app(fast_path_settings(tmp_path, auth=True)))) as c:
        refused = await c.get("/api/v1/triggerinstances")
        assert refused.status == 401
        assert refused.content_type == "application/json"
        assert "faultstring" in await refused.json()
        wrong = await c.get("/api/v1/triggerinstances", headers={"St2-Api-Key": "hy_wrong"})
        assert wrong.status == 401
        assert "faultstring" in await wrong.json()

        record, key = new_api_key("reader")
        await c.server.app[RUNTIME].store.create_api_key(record)
        allowed = await c.get("/api/v1/triggerinstances", headers={"St2-Api-Key": key})
        assert allowed.status == 200
        assert allowed.headers["X-Total-Count"] == "0"
        # Open routes stay open; an unknown path outside the API is 404, but the API's
        # own paths and methods cannot be mapped without a key.
        assert (await c.get("/health")).status == 200
        assert (await c.get("/nothing-here")).status == 404
        assert (await c.get("/api/v1/nothing-here")).status == 401
        assert (await c.delete("/api/v1/triggerinstances")).status == 401
        known = {"St2-Api-Key": key}
        assert (await c.get("/api/v1/nothing-here", headers=known)).status == 404
        assert (await c.delete("/api/v1/triggerinstances", headers=known)).status == 405


# --- webhook counts in /metrics -----------------------------------------------------------------


def webhook_counts(text: str) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "hookyard_webhooks_received":
            continue
        assert family.type == "counter"
        for sample in family.samples:
            if sample.name == "hookyard_webhooks_received_total":
                counts[sample.labels["webhook"], sample.labels["status"]] = sample.value
    return counts


async def test_webhook_counts_by_hook_and_status(client) -> None:
    before = await client.get("/metrics")
    assert before.status == 200
    assert webhook_counts(await before.text()) == {}

    for n in range(2):
        assert (await post_json(client, f'{{"n": {n}}}'.encode())).status == 202
    unknown = await post_json(client, b"{}", "/webhooks/not-a-hook")
    assert unknown.status == 404
    unsupported = await client.post(
        "/webhooks/anything", data=b"<x/>", headers={"Content-Type": "application/xml"}
    )
    assert unsupported.status == 415
    bad = await post_json(client, b"{bad", "/api/v1/webhooks/anything")
    assert bad.status == 400
    nested = await post_json(client, b"[]", "/webhooks/team/alerts")
    assert nested.status == 202

    response = await client.get("/metrics")
    text = await response.text()
    assert "# TYPE hookyard_webhooks_received_total counter" in text
    assert webhook_counts(text) == {
        ("anything", "202"): 2.0,
        ("anything", "415"): 1.0,
        ("anything", "400"): 1.0,
        ("<unknown>", "404"): 1.0,
        ("team/alerts", "202"): 1.0,
    }
    lines = text.splitlines()
    assert 'hookyard_webhooks_received_total{status="404",webhook="<unknown>"} 1.0' in lines
    assert 'hookyard_webhooks_received_total{status="202",webhook="anything"} 2.0' in lines


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (5, "SQLITE_BUSY"),
        (261, "SQLITE_BUSY_RECOVERY"),
        (517, "SQLITE_BUSY_SNAPSHOT"),
        (262, "SQLITE_LOCKED_SHAREDCACHE"),
    ],
)
def test_every_busy_or_locked_variant_is_store_busy(tmp_path: Path, code: int, name: str) -> None:
    """On the loop's connection (busy_timeout 0) SQLite reports these itself; each must be
    retried like plain SQLITE_BUSY, not answered as a store failure."""
    from engine.errors import StoreBusy
    from engine.store.sqlite import SqliteStore

    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode = code
    error.sqlite_errorname = name
    store = SqliteStore(tmp_path / "h.db", StoreSettings())
    assert isinstance(store._translate(error), StoreBusy)
    other = sqlite3.OperationalError("disk I/O error")
    other.sqlite_errorcode, other.sqlite_errorname = 10, "SQLITE_IOERR"
    assert not isinstance(store._translate(other), StoreBusy)
