"""The ingest writer process: webhooks stored by a child process of the api role.

Real parts only: SQLite files under tmp_path (and the PostgreSQL test database when
HOOKYARD_TEST_PG is set), the real app behind aiohttp's test server, the real child
process, killed with real signals. Requests whose exact bytes matter are written to a
plain socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.config import Settings, StoreSettings
from engine.errors import StoreUnavailable
from engine.http.app import create_app
from engine.http.context import RUNTIME, STORE_UNAVAILABLE
from engine.ingest import writer as ingest_writer
from engine.ingest.writer import IngestProcess, _Child
from engine.model.records import NewTriggerInstance
from engine.process.runtime import Runtime
from engine.store import create_store
from engine.store.codec import UnstorableValue
from tests.support.ingest_writer import (
    CHILD_MODULE,
    ingest_writer_settings,
    stored_rows,
    writer_children,
)
from tests.support.processes import alive, children, cmdline, process_state
from tests.support.waiting import wait_until

DEDUPE_HOOKS = {"dd": {"auth": "none", "dedupe": {"header": "Idempotency-Key"}}}


def runtime_of(client: TestClient) -> Runtime:
    return client.server.app[RUNTIME]


# --- raw HTTP: every byte of the request chosen by the test ------------------------------------


async def raw_post(
    port: int, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """POST with exactly these header lines (plus Host, Content-Length, Connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [
            b"POST " + path.encode() + b" HTTP/1.1",
            b"Host: hookyard.test",
            *(name + b": " + value for name, value in headers),
            b"Content-Length: " + str(len(body)).encode(),
            b"Connection: close",
        ]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, content = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    response_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        response_headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), response_headers, content


# --- stored rows, read with the database's own client -------------------------------------------


def sqlite_file(settings: Settings) -> Path:
    return Path(settings.store.url.removeprefix("sqlite:///"))


async def rows_with_dedupe_key(url: str, key: str) -> list[str]:
    if url.startswith("postgresql://"):
        conn = await asyncpg.connect(url)
        try:
            records = await conn.fetch(
                "SELECT id FROM trigger_instances WHERE dedupe_key = $1", key
            )
        finally:
            await conn.close()
        return [r["id"] for r in records]
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT id FROM trigger_instances WHERE dedupe_key = ?", (key,)
            ).fetchall()
        ]


def all_sqlite_payloads(path: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT id, payload FROM trigger_instances").fetchall())


# --- 1. the child builds the payloads the api process would ------------------------------------

# (path, header lines, body): each sent once to each app, byte for byte the same.
EQUIVALENCE_CASES: dict[str, tuple[str, list[tuple[bytes, bytes]], bytes]] = {
    "repeated header": (
        "/webhooks/anything",
        [
            (b"Content-Type", b"application/json"),
            (b"X-Multi", b"one"),
            (b"x-MULTI", b"two"),
            (b"X-Other", b"o"),
            (b"X-Multi", b"three"),
        ],
        b'{"a": 1}',
    ),
    "credential headers": (
        "/webhooks/anything",
        [
            (b"Content-Type", b"application/json"),
            (b"Authorization", b"Bearer hy_secretsecret"),
            (b"Cookie", b"session=abc"),
            (b"St2-Api-Key", b"hy_anothersecret"),
            (b"X-Auth-Token", b"token-secret"),
            (b"X-Kept", b"kept"),
        ],
        b'{"b": 2}',
    ),
    "non-utf-8 header value": (
        "/webhooks/anything",
        [
            (b"Content-Type", b"application/json"),
            (b"X-Latin1", b"caf\xe9 \xff\xfe end"),
            (b"X-Utf8", "café ✓".encode()),
        ],
        b'{"c": 3}',
    ),
    "form body": (
        "/webhooks/anything",
        [(b"Content-Type", b"application/x-www-form-urlencoded")],
        b"a=1&b=two+words&a=3&empty=&caf%C3%A9=%E2%9C%93",
    ),
    "text body": (
        "/webhooks/anything",
        [(b"Content-Type", b"text/plain; charset=utf-8")],
        'line one\nline "two" \\ café\n'.encode(),
    ),
    "json stored verbatim": (
        "/webhooks/anything",
        [(b"Content-Type", b"application/json")],
        b' {"spaced" :  [1, 2.5, {"x": null}] ,"s": "\\u00e9\\n"}\n',
    ),
    "json re-encoded": (
        "/webhooks/anything",
        [(b"Content-Type", b"application/json")],
        b'{"thousand": 1e3, "small": 2.5E-3, "list": [1E2]}',
    ),
    "generic st2 hook": (
        "/webhooks/st2",
        [(b"Content-Type", b"application/json")],
        b'{"trigger": "t.custom", "payload": {"n": 1e3, "s": "caf\\u00e9", "big": '
        + str(2**70).encode()
        + b', "l": [true, null, -0.0]}}',
    ),
}


async def _post_cases(port: int) -> dict[str, str]:
    ids = {}
    for name, (path, headers, body) in EQUIVALENCE_CASES.items():
        status, _, content = await raw_post(port, path, headers, body)
        assert status == 202, (name, content)
        ids[name] = json.loads(content)["id"]
    return ids


async def test_payloads_are_byte_identical_with_and_without_the_writer_process(tmp_path):
    with_child = ingest_writer_settings(tmp_path / "child", writer_process=True)
    in_process = ingest_writer_settings(tmp_path / "inline", writer_process=False)
    async with (
        TestServer(create_app(with_child)) as child_server,
        TestServer(create_app(in_process)) as inline_server,
    ):
        assert child_server.app[RUNTIME].ingest_process is not None
        assert inline_server.app[RUNTIME].ingest_process is None
        child_ids = await _post_cases(child_server.port)
        inline_ids = await _post_cases(inline_server.port)
    child_rows = all_sqlite_payloads(sqlite_file(with_child))
    inline_rows = all_sqlite_payloads(sqlite_file(in_process))
    assert len(child_rows) == len(inline_rows) == len(EQUIVALENCE_CASES)
    for name in EQUIVALENCE_CASES:
        assert child_rows[child_ids[name]] == inline_rows[inline_ids[name]], name

    # And what both stored is what the README promises.
    stored = {name: json.loads(child_rows[child_ids[name]]) for name in EQUIVALENCE_CASES}
    repeated = stored["repeated header"]
    assert repeated["headers"]["X-Multi"] == "one, two, three"
    assert "x-MULTI" not in repeated["headers"]
    assert repeated["headers_lower"]["x-multi"] == "one, two, three"
    assert repeated["headers"]["Host"] == "hookyard.test"
    credentials = stored["credential headers"]
    for payload_headers in (credentials["headers"], credentials["headers_lower"]):
        lowered = {name.lower() for name in payload_headers}
        assert lowered.isdisjoint({"authorization", "cookie", "st2-api-key", "x-auth-token"})
    assert credentials["headers"]["X-Kept"] == "kept"
    assert "secret" not in child_rows[child_ids["credential headers"]]
    odd = stored["non-utf-8 header value"]["headers"]
    # Not UTF-8: read as ISO-8859-1 (text PostgreSQL can hold, unlike surrogate escapes).
    assert odd["X-Latin1"] == "caf\u00e9 \u00ff\u00fe end"
    assert odd["X-Utf8"] == "café ✓"
    assert stored["form body"]["body"] == {
        "a": ["1", "3"],
        "b": "two words",
        "empty": "",
        "café": "✓",
    }
    assert stored["text body"]["body"] == 'line one\nline "two" \\ café\n'
    verbatim_body = EQUIVALENCE_CASES["json stored verbatim"][2].decode()
    assert (
        f'"body":{verbatim_body},"method":"POST"' in child_rows[child_ids["json stored verbatim"]]
    )
    reencoded = child_rows[child_ids["json re-encoded"]]
    assert "1e3" not in reencoded and "E-3" not in reencoded and "1E2" not in reencoded
    assert json.loads(reencoded)["body"] == {"thousand": 1000.0, "small": 0.0025, "list": [100.0]}
    generic = stored["generic st2 hook"]
    assert generic == {"n": 1000.0, "s": "café", "big": 2**70, "l": [True, None, -0.0]}
    assert isinstance(generic["big"], int)


# --- 2. the child is a real process, and it exits with the app --------------------------------


async def test_the_writer_is_a_child_process_that_stores_and_exits_with_the_app(tmp_path):
    settings = ingest_writer_settings(tmp_path)
    async with TestClient(TestServer(create_app(settings))) as client:
        writer = runtime_of(client).ingest_process
        assert writer is not None
        pid = writer.pid
        assert pid is not None and pid != os.getpid()
        assert alive(pid)
        assert process_state(pid)[1] == os.getpid()
        assert CHILD_MODULE in cmdline(pid)
        process = writer._child.process
        sent_after = datetime.now(UTC)
        response = await client.post("/webhooks/anything", json={"hello": "child"})
        answered_before = datetime.now(UTC)
        assert response.status == 202
        answer = await response.json()
        assert answer["duplicate"] is False
        rows = await stored_rows(settings.store.url, [answer["id"]])
        assert json.loads(rows[answer["id"]]["payload"])["body"] == {"hello": "child"}
        assert rows[answer["id"]]["status"] == "pending"
        # The time the api process gave it, carried to the child to the microsecond.
        instance = await (await client.get(f"/api/v1/triggerinstances/{answer['id']}")).json()
        occurred = datetime.fromisoformat(instance["occurrence_time"].replace("Z", "+00:00"))
        assert sent_after <= occurred <= answered_before
        ready = await client.get("/ready")
        assert ready.status == 200
    await wait_until(lambda: not alive(pid), "the writer process exits after the app closed")
    assert pid not in writer_children()
    # It was let finish (its socket closed), not killed.
    assert process.returncode == 0
    assert writer.pid is None


async def test_close_writes_what_is_queued_before_the_child_exits(tmp_path):
    settings = ingest_writer_settings(tmp_path)
    store = create_store(settings.store, tmp_path)
    await store.open()
    try:
        writer = IngestProcess(settings, store)
        await writer.start()
        process = writer._child.process
        items = [NewTriggerInstance(trigger="t.custom", payload={"n": n}) for n in range(100)]
        adds = [asyncio.ensure_future(writer.add_trigger_instance(item)) for item in items]
        await asyncio.sleep(0)  # one turn of the loop: each add queues its item
        assert writer._committer.queued > 0, "close must find work queued"
        await writer.close()
        assert all(add.done() for add in adds), "close returns after every answer"
        answers = [add.result() for add in adds]
        assert [a.id for a in answers] == [item.id for item in items]
        assert not any(a.duplicate for a in answers)
        assert process.returncode == 0
        assert writer.problem() is None  # closed, not restarting
        with pytest.raises(StoreUnavailable):
            await writer.add_trigger_instance(NewTriggerInstance(trigger="t.custom", payload={}))
    finally:
        await store.close()
    rows = await stored_rows(settings.store.url, [item.id for item in items])
    assert sorted(json.loads(row["payload"])["n"] for row in rows.values()) == list(range(100))
    assert {row["trigger"] for row in rows.values()} == {"t.custom"}


# --- 3. a killed child: 503 for what it held, nothing accepted is lost, a new child ------------


async def test_killing_the_writer_mid_stream_loses_no_accepted_webhook(tmp_path):
    settings = ingest_writer_settings(tmp_path)
    total = 200
    kill_after = 30
    async with TestClient(TestServer(create_app(settings))) as client:
        writer = runtime_of(client).ingest_process
        first_pid = writer.pid
        accepted_so_far = 0
        killed = False

        async def post(n: int) -> tuple[int, int, Any, str | None]:
            nonlocal accepted_so_far, killed
            response = await client.post("/webhooks/anything", json={"n": n})
            answer = await response.json()
            if response.status == 202:
                accepted_so_far += 1
                if accepted_so_far >= kill_after and not killed:
                    killed = True
                    os.kill(first_pid, signal.SIGKILL)
            return n, response.status, answer, response.headers.get("Retry-After")

        results = await asyncio.gather(*(post(n) for n in range(total)))
        assert killed
        statuses = Counter(status for _, status, _, _ in results)
        assert set(statuses) <= {202, 503}, statuses
        assert statuses[503] >= 1, "the kill must find work in flight"
        assert statuses[202] >= kill_after
        for _, status, answer, retry_after in results:
            if status == 503:
                assert answer == {"faultstring": STORE_UNAVAILABLE}
                assert retry_after == str(settings.ingest.retry_after)

        await wait_until(lambda: writer.restarts == 1, "a new writer process is started")
        await wait_until(
            lambda: _ready_status(client, 200), "/ready is 200 again after the restart"
        )
        second_pid = writer.pid
        assert second_pid not in (None, first_pid) and alive(second_pid)
        assert not alive(first_pid)

        later = await asyncio.gather(
            *(client.post("/webhooks/anything", json={"n": total + k}) for k in range(5))
        )
        assert [r.status for r in later] == [202] * 5
        later_ids = [(await r.json())["id"] for r in later]
        assert len(await stored_rows(settings.store.url, later_ids)) == 5

    accepted = {n: answer["id"] for n, status, answer, _ in results if status == 202}
    rows = await stored_rows(settings.store.url, list(accepted.values()))
    assert set(rows) == set(accepted.values()), "every 202 is stored"
    for n, instance_id in accepted.items():
        assert json.loads(rows[instance_id]["payload"])["body"] == {"n": n}
    # Nothing is stored twice, and nothing that was never posted.
    with contextlib.closing(sqlite3.connect(sqlite_file(settings))) as conn:
        stored_ns = [
            row[0]
            for row in conn.execute(
                "SELECT json_extract(payload, '$.body.n') FROM trigger_instances"
            )
        ]
    counts = Counter(stored_ns)
    assert max(counts.values()) == 1, [n for n, c in counts.items() if c > 1]
    assert set(counts) <= set(range(total + 5))


async def _ready_status(client: TestClient, status: int) -> bool:
    response = await client.get("/ready")
    await response.read()
    return response.status == status


async def test_ready_names_the_writer_process_while_it_restarts(tmp_path, monkeypatch):
    # A longer pause than the default 0.5 s, so that the restart window can be seen surely.
    monkeypatch.setattr(ingest_writer, "_RESTART_PAUSE", 1.5)
    settings = ingest_writer_settings(tmp_path)
    async with TestClient(TestServer(create_app(settings))) as client:
        runtime = runtime_of(client)
        writer = runtime.ingest_process
        first_pid = writer.pid
        assert runtime.worker_problems() == []
        os.kill(first_pid, signal.SIGKILL)
        problems = await wait_until(runtime.worker_problems, "the dead writer is noticed", 2.0)
        assert any("ingest writer process" in problem for problem in problems), problems
        ready = await client.get("/ready")
        assert ready.status == 503
        body = await ready.json()
        assert body["ready"] is False
        assert any("ingest writer process" in problem for problem in body["problems"])
        # Meanwhile a webhook is refused as the store being unavailable, not lost.
        refused = await client.post("/webhooks/anything", json={"during": "restart"})
        assert refused.status == 503
        assert (await refused.json()) == {"faultstring": STORE_UNAVAILABLE}
        assert refused.headers["Retry-After"] == str(settings.ingest.retry_after)

        await wait_until(lambda: writer.restarts == 1, "a new writer process is started")
        assert runtime.worker_problems() == []
        assert (await client.get("/ready")).status == 200
        assert writer.pid != first_pid and alive(writer.pid)
        response = await client.post("/webhooks/anything", json={"after": "restart"})
        assert response.status == 202
        instance_id = (await response.json())["id"]
        assert instance_id in await stored_rows(settings.store.url, [instance_id])
    with contextlib.closing(sqlite3.connect(sqlite_file(settings))) as conn:
        bodies = [
            json.loads(row[0])["body"]
            for row in conn.execute("SELECT payload FROM trigger_instances").fetchall()
        ]
    assert bodies == [{"after": "restart"}]


# --- 4. dedupe through the child -----------------------------------------------------------------


async def test_dedupe_through_the_writer_process(tmp_path, store_url):
    settings = ingest_writer_settings(tmp_path / "app", store_url=store_url, webhooks=DEDUPE_HOOKS)
    run = uuid.uuid4().hex  # the PostgreSQL test database is shared by the session
    async with TestClient(TestServer(create_app(settings))) as client:
        assert runtime_of(client).ingest_process is not None
        store = runtime_of(client).store
        before = await store.pending_backlog()
        store._backlog._refresh_seconds = 3600.0  # from now on only what is counted in

        first = await client.post("/webhooks/dd", json={"try": 1}, headers={"Idempotency-Key": run})
        second = await client.post(
            "/webhooks/dd", json={"try": 2}, headers={"Idempotency-Key": run}
        )
        assert first.status == second.status == 202
        first_answer, second_answer = await first.json(), await second.json()
        assert first_answer["duplicate"] is False
        assert second_answer == {**first_answer, "duplicate": True}

        burst_key = run + "-burst"
        responses = await asyncio.gather(
            *(
                client.post("/webhooks/dd", json={"n": n}, headers={"Idempotency-Key": burst_key})
                for n in range(20)
            )
        )
        assert {r.status for r in responses} == {202}
        answers = [await r.json() for r in responses]
        assert len({a["id"] for a in answers}) == 1
        assert sum(not a["duplicate"] for a in answers) == 1

        # The api process counted what the child stored, duplicates not.
        assert await store.pending_backlog() == before + 2

    assert await rows_with_dedupe_key(store_url, f"dd:{run}") == [first_answer["id"]]
    assert await rows_with_dedupe_key(store_url, f"dd:{burst_key}") == [answers[0]["id"]]
    row = (await stored_rows(store_url, [first_answer["id"]]))[first_answer["id"]]
    assert json.loads(row["payload"])["body"] == {"try": 1}


# --- 5. a refused item fails alone in its batch -------------------------------------------------

Post = Callable[[], Awaitable[aiohttp.ClientResponse]]


async def post_in_one_batch(
    client: TestClient, settings: Settings, posts: list[Post]
) -> list[aiohttp.ClientResponse]:
    """Answers to `posts`, all sent to the writer process in one batch.

    A plain connection holds the SQLite file's write lock while two requests take the
    writer's two batch slots (the child waits for the lock); `posts` then queue behind
    them, and become the next batch once the lock is released.
    """
    committer = runtime_of(client).ingest_process._committer
    lock = sqlite3.connect(sqlite_file(settings), isolation_level=None, timeout=0)
    try:
        lock.execute("BEGIN IMMEDIATE")
        plugs = []
        for n in range(2):
            plugs.append(asyncio.ensure_future(client.post("/webhooks/anything", json={"p": n})))
            await wait_until(lambda n=n: len(committer._in_flight) == n + 1, "a batch waits")
        tasks = [asyncio.ensure_future(post()) for post in posts]
        await wait_until(lambda: committer.queued == len(posts), "every post is queued")
        assert len(committer._in_flight) == 2
        lock.execute("COMMIT")
        responses = await asyncio.gather(*tasks)
        plugged = await asyncio.gather(*plugs)
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()
    assert [r.status for r in plugged] == [202, 202]
    return responses


async def test_an_unstorable_generic_payload_fails_alone_in_its_batch(tmp_path):
    settings = ingest_writer_settings(tmp_path)
    async with TestClient(TestServer(create_app(settings))) as client:
        stats = runtime_of(client).ingest_process._committer.stats

        def good(n: int) -> Post:
            return lambda: client.post("/webhooks/anything", json={"n": n})

        def bad() -> Post:
            body = {"trigger": "t.custom", "payload": {"s": "a\u0000b"}}
            return lambda: client.post("/webhooks/st2", json=body)

        posts = [*(good(n) for n in range(4)), bad(), *(good(n) for n in range(4, 8))]
        responses = await post_in_one_batch(client, settings, posts)
        refused = responses[4]
        assert refused.status == 400
        assert "NUL" in (await refused.json())["faultstring"]
        good_responses = responses[:4] + responses[5:]
        assert [r.status for r in good_responses] == [202] * 8
        ids = [(await r.json())["id"] for r in good_responses]
        # The child refused the batch holding the NUL, then the NUL alone when the batch's
        # items were written singly.
        assert stats.failed_batches == 2
    rows = await stored_rows(settings.store.url, ids)
    assert set(rows) == set(ids)
    assert sorted(json.loads(row["payload"])["body"]["n"] for row in rows.values()) == list(
        range(8)
    )
    assert len(all_sqlite_payloads(sqlite_file(settings))) == 8 + 2  # and the two plugs


# (path, content type, body) of named-hook posts whose body no store keeps.
REFUSED_BODIES = {
    "malformed json": ("application/json", b'{"a": 1,'),
    "unsupported type": ("application/xml", b"<a/>"),
    "text not utf-8": ("text/plain", b"caf\xe9"),
    "form not utf-8": ("application/x-www-form-urlencoded", b"a=\xff"),
    "escaped nul": ("application/json", b'{"s": "a\\u0000b"}'),
    "nan": ("application/json", b'{"x": NaN}'),
    "too deep": ("application/json", b"[" * 80 + b"]" * 80),
}


async def test_a_refused_body_is_its_own_answer_and_the_batch_is_written(tmp_path):
    """The child parses named-hook bodies: a body it refuses is that request's 4xx, with
    the message the api process gives without a writer process, and its neighbours in
    the batch are stored."""
    settings = ingest_writer_settings(tmp_path / "child", webhooks=DEDUPE_HOOKS)
    inline = ingest_writer_settings(
        tmp_path / "inline", writer_process=False, webhooks=DEDUPE_HOOKS
    )

    def refused_post(client: TestClient, name: str) -> Post:
        content_type, body = REFUSED_BODIES[name]
        headers = {"Content-Type": content_type}
        return lambda: client.post("/webhooks/anything", data=body, headers=headers)

    async with (
        TestClient(TestServer(create_app(settings))) as client,
        TestClient(TestServer(create_app(inline))) as inline_client,
    ):
        runtime = runtime_of(client)
        stats = runtime.ingest_process._committer.stats
        before = await runtime.store.pending_backlog()
        runtime.store._backlog._refresh_seconds = 3600.0  # moved only by what is counted in

        key = {"Idempotency-Key": "k1"}
        posts: list[Post] = [
            lambda: client.post("/webhooks/anything", json={"good": 0}),
            # A refused body with a dedupe key stores nothing, so the key stays free...
            lambda: client.post(
                "/webhooks/dd", data=b"{nope", headers={**key, "Content-Type": "application/json"}
            ),
            *(refused_post(client, name) for name in REFUSED_BODIES),
            lambda: client.post("/webhooks/anything", json={"good": 1}),
            # ...for a good body with the same key.
            lambda: client.post("/webhooks/dd", json={"good": 2}, headers=key),
        ]
        responses = await post_in_one_batch(client, settings, posts)
        assert stats.failed_batches == 0, "no batch failed as a whole"
        assert stats.largest_batch == len(posts), "all of them were one batch"

        answers = [(r.status, await r.json()) for r in responses]
        good = [answers[0], answers[-2], answers[-1]]
        assert [status for status, _ in good] == [202] * 3
        assert all(answer["duplicate"] is False for _, answer in good)
        assert answers[1][0] == 400 and "malformed JSON" in answers[1][1]["faultstring"]
        refused = dict(zip(REFUSED_BODIES, answers[2:-2], strict=True))
        for name, (status, answer) in refused.items():
            expected = await refused_post(inline_client, name)()
            assert (status, answer) == (expected.status, await expected.json()), name
            assert status in (400, 415), name
        assert refused["unsupported type"][0] == 415
        assert "NUL" in refused["escaped nul"][1]["faultstring"]
        assert await total_stored(inline_client) == 0
        # Told of the three stored (and the two plugs), not of the refused.
        assert await runtime.store.pending_backlog() == before + 3 + 2

    ids = [answer["id"] for _, answer in good]
    rows = await stored_rows(settings.store.url, ids)
    bodies = [json.loads(rows[instance_id]["payload"])["body"] for instance_id in ids]
    assert bodies == [{"good": 0}, {"good": 1}, {"good": 2}]
    assert rows[ids[2]]["dedupe_key"] == "dd:k1"
    assert len(all_sqlite_payloads(sqlite_file(settings))) == 3 + 2


async def total_stored(client: TestClient) -> int:
    response = await client.get("/api/v1/triggerinstances")
    assert response.status == 200
    return int(response.headers["X-Total-Count"])


# --- 6. a child that cannot open the store --------------------------------------------------------


async def test_a_writer_that_cannot_open_the_store_fails_and_leaves_no_process(tmp_path):
    regular_file = tmp_path / "afile.txt"
    regular_file.write_text("not a folder")
    settings = ingest_writer_settings(tmp_path, store_url=f"sqlite:///{regular_file}/db.sqlite")
    before = children(os.getpid())
    exits = []
    with pytest.raises(StoreUnavailable) as raised:
        await _Child.spawn(settings, exits.append)
    message = str(raised.value)
    assert "could not open the store" in message
    assert "afile.txt" in message and "cannot create the folder" in message
    assert children(os.getpid()) == before, "the child was stopped and reaped"
    assert exits == []


# --- 7. closing the app drains what is in flight through the child ------------------------------


async def test_closing_the_app_drains_in_flight_webhooks_through_the_writer(tmp_path):
    settings = ingest_writer_settings(tmp_path)
    server = TestServer(create_app(settings))
    await server.start_server()
    pid = server.app[RUNTIME].ingest_process.pid
    url = str(server.make_url("/webhooks/anything"))
    closing: asyncio.Task[None] | None = None
    accepted: dict[int, str] = {}
    after_close: list[int] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:

            async def post(n: int) -> int | None:
                nonlocal closing
                try:
                    async with session.post(url, json={"n": n}) as response:
                        status = response.status
                        answer = await response.json()
                except aiohttp.ClientError:
                    return None  # the server stopped taking requests
                if status == 202:
                    accepted[n] = answer["id"]
                    if closing is not None:
                        after_close.append(n)
                    if len(accepted) == 50 and closing is None:
                        closing = asyncio.create_task(server.close())
                return status

            statuses = await asyncio.gather(*(post(n) for n in range(300)))
            assert closing is not None
            await asyncio.wait_for(closing, 30)
    finally:
        await server.close()
    answered = Counter(statuses)
    assert set(answered) <= {202, None}, answered
    assert after_close, "requests in flight when the close began were answered"
    await wait_until(lambda: not alive(pid), "the writer process exits with the app")
    stored = all_sqlite_payloads(sqlite_file(settings))
    assert set(accepted.values()) <= set(stored), "every 202 is stored"
    for n, instance_id in accepted.items():
        assert json.loads(stored[instance_id])["body"] == {"n": n}


# --- 8. the api process learns what the child stored (SQLite and PostgreSQL) ---------------------


async def test_the_api_process_counts_what_the_writer_stored(tmp_path, store_url):
    settings = ingest_writer_settings(tmp_path / "app", store_url=store_url)
    async with TestClient(TestServer(create_app(settings))) as client:
        runtime = runtime_of(client)
        assert runtime.ingest_process is not None and alive(runtime.ingest_process.pid)
        before = await runtime.store.pending_backlog()
        # No recount from now on: the backlog moves only by what the api process is told.
        runtime.store._backlog._refresh_seconds = 3600.0
        responses = await asyncio.gather(
            *(client.post("/webhooks/anything", json={"n": n}) for n in range(20))
        )
        assert [r.status for r in responses] == [202] * 20
        ids = [(await r.json())["id"] for r in responses]
        assert await runtime.store.pending_backlog() == before + 20
    rows = await stored_rows(store_url, ids)
    assert set(rows) == set(ids)
    assert {row["status"] for row in rows.values()} == {"pending"}
    assert {row["webhook"] for row in rows.values()} == {"anything"}


async def test_the_rules_worker_decides_what_the_writer_stored(tmp_path, store_url):
    settings = ingest_writer_settings(tmp_path / "app", store_url=store_url, roles=("api", "rules"))
    async with TestClient(TestServer(create_app(settings))) as client:
        runtime = runtime_of(client)
        assert runtime.ingest_process is not None
        responses = await asyncio.gather(
            *(client.post("/webhooks/anything", json={"n": n}) for n in range(10))
        )
        assert [r.status for r in responses] == [202] * 10
        ids = [(await r.json())["id"] for r in responses]

        async def all_processed() -> bool:
            rows = await stored_rows(store_url, ids)
            return len(rows) == 10 and {row["status"] for row in rows.values()} == {"processed"}

        await wait_until(all_processed, "the rules worker processes the child's rows")
        for instance_id in ids[:2]:
            response = await client.get(
                "/api/v1/ruleenforcements", params={"trigger_instance": instance_id}
            )
            assert response.status == 200
            enforcements = await response.json()
            assert [e["rule"]["ref"] for e in enforcements] == ["t.anything"]


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param([(b"X-Latin1", b"caf\xe9")], b'{"pg": "header"}', id="header byte"),
        pytest.param([], b'{"pg": "body \\ud800"}', id="body escape"),
    ],
)
async def test_a_lone_surrogate_is_not_a_503_on_postgresql(tmp_path, pg_url, headers, body):
    settings = ingest_writer_settings(tmp_path / "app", store_url=pg_url)
    async with TestServer(create_app(settings)) as server:
        status, _, content = await raw_post(
            server.port,
            "/webhooks/anything",
            [(b"Content-Type", b"application/json"), *headers],
            body,
        )
        # Its neighbours are not affected: the same post without it is stored.
        fine, _, _ = await raw_post(
            server.port,
            "/webhooks/anything",
            [(b"Content-Type", b"application/json")],
            b'{"pg": "fine"}',
        )
    assert fine == 202
    # Stored as on SQLite, or refused as what no store can keep; never "retry later".
    assert status in (202, 400), (status, content)


# --- closing while a new child is starting ------------------------------------------------------


# That ResourceWarning is the same bug's symptom; the assertion below is what is tested.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_closing_while_the_writer_restarts_leaves_no_process(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_writer, "_RESTART_PAUSE", 0.0)
    settings = ingest_writer_settings(tmp_path, busy_timeout=10.0)
    lock = sqlite3.connect(sqlite_file(settings), isolation_level=None, timeout=0)
    spawned: set[int] = set()
    try:
        async with TestClient(TestServer(create_app(settings))) as client:
            writer = runtime_of(client).ingest_process
            first_pid = writer.pid
            # The next child's store open (its schema check takes the write lock) waits.
            lock.execute("BEGIN IMMEDIATE")
            os.kill(first_pid, signal.SIGKILL)
            spawned = await wait_until(
                lambda: writer_children() - {first_pid}, "a new writer process is starting"
            )
            assert writer.pid is None and writer.restarts == 0
        # The app is closed: the child it was starting must be gone with it.
        await wait_until(lambda: not (spawned & writer_children()), "no writer left", 1.0)
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()
        for pid in spawned & writer_children():
            os.kill(pid, signal.SIGKILL)
        gc.collect()  # the leaked socket's warning, if any, here rather than in another test


# --- a writer that stops answering ---------------------------------------------------------------


async def test_a_writer_that_stops_answering_is_replaced_and_its_batch_is_a_503(
    tmp_path, monkeypatch
):
    # The reply timeout is twice busy_timeout plus a margin: 1 s here.
    monkeypatch.setattr(ingest_writer, "_REPLY_MARGIN", 0.0)
    monkeypatch.setattr(ingest_writer, "_RESTART_PAUSE", 0.0)
    settings = ingest_writer_settings(tmp_path, busy_timeout=0.5)
    async with TestClient(TestServer(create_app(settings))) as client:
        writer = runtime_of(client).ingest_process
        stuck_pid = writer.pid
        os.kill(stuck_pid, signal.SIGSTOP)  # alive, but never answers
        try:
            started = time.monotonic()
            response = await client.post("/webhooks/anything", json={"n": "stuck"})
            waited = time.monotonic() - started
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stuck_pid, signal.SIGCONT)
        assert response.status == 503, await response.text()
        assert "Retry-After" in response.headers
        assert 0.9 < waited < 5.0, waited
        await wait_until(lambda: writer.restarts == 1 and writer.pid is not None, "a new writer")
        assert writer.pid != stuck_pid
        await wait_until(lambda: not alive(stuck_pid), "the stuck writer is gone")
        response = await client.post("/webhooks/anything", json={"n": "after"})
        assert response.status == 202, await response.text()
        instance_id = (await response.json())["id"]
        rows = await stored_rows(settings.store.url, [instance_id])
        assert set(rows) == {instance_id}


@pytest.mark.parametrize("writer_process", [True, False])
async def test_a_dedupe_key_that_is_not_utf8_is_read_as_latin1(tmp_path, store_url, writer_process):
    settings = ingest_writer_settings(
        tmp_path / "app", store_url=store_url, webhooks=DEDUPE_HOOKS, writer_process=writer_process
    )
    key = uuid.uuid4().hex.encode() + b"-caf\xe9"  # the database is shared by the session
    async with TestServer(create_app(settings)) as server:
        answers = []
        for _ in range(2):
            status, _, content = await raw_post(
                server.port,
                "/webhooks/dd",
                [(b"Content-Type", b"application/json"), (b"Idempotency-Key", key)],
                b"{}",
            )
            assert status == 202, content
            answers.append(json.loads(content))
    assert answers[1] == {**answers[0], "duplicate": True}
    stored_key = "dd:" + key.decode("latin-1")
    assert await rows_with_dedupe_key(store_url, stored_key) == [answers[0]["id"]]


async def test_the_writer_imports_the_api_process_engine_not_one_in_the_working_folder(
    tmp_path, monkeypatch
):
    # A stray engine package in the working folder would be imported first by a plain
    # `python -m`; the child gets the API process's import path instead.
    stray = tmp_path / "cwd" / "engine"
    stray.mkdir(parents=True)
    (stray / "__init__.py").write_text("raise ImportError('the stray engine was imported')\n")
    monkeypatch.chdir(tmp_path / "cwd")
    settings = ingest_writer_settings(tmp_path / "app")
    async with TestClient(TestServer(create_app(settings))) as client:
        response = await client.post("/webhooks/anything", json={"n": 1})
        assert response.status == 202, await response.text()
        assert runtime_of(client).ingest_process.pid is not None


async def test_a_writer_of_another_protocol_refuses_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_writer, "_PROTOCOL", 999)  # what the API process sends
    settings = ingest_writer_settings(tmp_path)
    before = writer_children()
    with pytest.raises(StoreUnavailable, match="protocol 999"):
        await _Child.spawn(settings, lambda child: None)
    await wait_until(lambda: not (writer_children() - before), "no writer left", 5.0)


async def test_the_writer_runs_in_a_session_of_its_own(tmp_path):
    # A signal to the API process's group (Ctrl-C, a terminal hangup) must not reach it:
    # the API process decides when it stops, after draining through it.
    async with TestClient(TestServer(create_app(ingest_writer_settings(tmp_path)))) as client:
        pid = runtime_of(client).ingest_process.pid
        assert os.getsid(pid) == pid != os.getsid(0)
        assert os.getpgid(pid) != os.getpgid(0)


@pytest.mark.postgres
async def test_a_value_postgresql_cannot_hold_is_unstorable_not_an_outage(tmp_path, pg_url):
    # A NUL in a text column is a data error (SQLSTATE class 22): the request's own 400,
    # never the 503 "retry later" a sender would repeat for ever. Its neighbours in the
    # same group commit are stored.
    store = create_store(StoreSettings(url=pg_url), tmp_path)
    await store.open()
    try:
        bad = NewTriggerInstance(trigger="t.x", payload={}, dedupe_key=f"{uuid.uuid4()}\x00")
        good = NewTriggerInstance(trigger="t.x", payload={"fine": True})
        answers = await asyncio.gather(
            store.add_trigger_instance(bad),
            store.add_trigger_instance(good),
            return_exceptions=True,
        )
        assert isinstance(answers[0], UnstorableValue), answers[0]
        assert answers[1].id == good.id and not answers[1].duplicate
        assert set(await stored_rows(pg_url, [bad.id, good.id])) == {good.id}
    finally:
        await store.close()
