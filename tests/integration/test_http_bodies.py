"""Hostile request bodies through the real app (aiohttp test server, SQLite file): form
bodies with huge numbers of fields (issue 15 item 4), compressed bodies (item 7) and JSON
nested 100,000 deep on every JSON-accepting API route (item 10).

Webhook tests run both ways a body is parsed and stored: by the ingest writer process
(the default) and in the API process (ingest.writer_process: false).
"""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.config import (
    IngestSettings,
    OutboundSettings,
    Settings,
)
from engine.errors import IngestError
from engine.http.app import create_app
from engine.http.content_coding import decode_body
from tests.support.app import app_client, settings_for
from tests.support.packs import noop_rule

HOOK_RULE = noop_rule("hook", "catch_all")


def bodies_settings(tmp_path: Path, **ingest) -> Settings:
    return settings_for(
        tmp_path,
        rules={"hook": HOOK_RULE},
        ingest=IngestSettings(**ingest),  # auth off: about bodies, not keys
        outbound=OutboundSettings(allow_private=("127.0.0.1/32",)),
    )


async def stored_body(client: TestClient, instance_id: str):
    response = await client.get(f"/api/v1/triggerinstances/{instance_id}")
    assert response.status == 200
    return (await response.json())["payload"]["body"]


@pytest.fixture(params=[True, False], ids=["writer-process", "in-process"])
def writer_process(request) -> bool:
    return request.param


# --- item 4: form bodies ------------------------------------------------------------------

REPEATED_FORM = b"a=1&" * 262_000  # 1 MB, one key 262,000 times


async def test_form_with_more_fields_than_the_limit_is_413_naming_it(tmp_path, writer_process):
    app = create_app(bodies_settings(tmp_path, writer_process=writer_process))
    async with TestClient(TestServer(app)) as client:
        started = time.monotonic()
        response = await client.post(
            "/webhooks/hook",
            data=REPEATED_FORM,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status == 413
        assert "ingest.max_form_fields" in (await response.json())["faultstring"]
        assert time.monotonic() - started < 10  # refused before parsing (was 40 s)
        # Within the limit, a repeated key is a list.
        response = await client.post(
            "/webhooks/hook",
            data=b"a=1&a=2&b=3&a=4",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status == 202
        assert await stored_body(client, (await response.json())["id"]) == {
            "a": ["1", "2", "4"],
            "b": "3",
        }


async def test_form_parsing_is_linear_in_the_repeats_of_a_key(tmp_path, writer_process):
    settings = bodies_settings(tmp_path, writer_process=writer_process, max_form_fields=300_000)
    async with app_client(settings) as client:
        started = time.monotonic()
        response = await client.post(
            "/webhooks/hook",
            data=REPEATED_FORM,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        elapsed = time.monotonic() - started
        assert response.status == 202, await response.text()
        # Quadratic parsing took 40 s here; linear takes well under a second (a loaded
        # machine gets a generous bound).
        assert elapsed < 15
        body = await stored_body(client, (await response.json())["id"])
        assert body["a"] == ["1"] * 262_000


# --- item 7: Content-Encoding ---------------------------------------------------------------

BIG_JSON = json.dumps({"items": [{"n": n, "text": "hookyard " * 20} for n in range(2000)]})


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-15)),  # raw deflate, also seen
    ],
)
async def test_compressed_body_is_stored_whole(tmp_path, writer_process, coding, encode):
    original = BIG_JSON.encode()
    sent = encode(original)
    assert len(sent) < len(original) // 10
    app = create_app(bodies_settings(tmp_path, writer_process=writer_process))
    async with TestClient(TestServer(app)) as client:
        response = await client.post(
            "/webhooks/hook",
            data=sent,
            headers={"Content-Type": "application/json", "Content-Encoding": coding},
        )
        assert response.status == 202, await response.text()
        assert await stored_body(client, (await response.json())["id"]) == json.loads(original)


async def test_gzip_bomb_is_413_and_nothing_is_stored(tmp_path, writer_process):
    bomb = gzip.compress(b'{"a": "' + b"0" * (200 * 1024 * 1024) + b'"}', 9)  # 200 MB
    assert len(bomb) < 1024 * 1024
    app = create_app(bodies_settings(tmp_path, writer_process=writer_process))
    async with TestClient(TestServer(app)) as client:
        response = await client.post(
            "/webhooks/hook",
            data=bomb,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert response.status == 413
        assert "limit of 1048576 bytes once decoded" in (await response.json())["faultstring"]
        listed = await client.get("/api/v1/triggerinstances")
        assert await listed.json() == []


def test_a_bomb_is_inflated_no_further_than_the_limit():
    limit = 1024 * 1024
    bomb = gzip.compress(b"\0" * (500 * 1024 * 1024), 9)
    tracemalloc.start()
    try:
        with pytest.raises(IngestError) as caught:
            decode_body(bomb, "gzip", limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.status == 413
    assert peak < 4 * limit


def test_gzip_members_are_decoded_one_after_the_other():
    assert decode_body(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 100) == b"abcd"


def test_a_body_of_many_empty_gzip_members_is_refused_not_decoded_quadratically():
    # 52,000 empty members in 1 MB: each member copied the rest of the body (~26 GB of
    # copying, seconds of a blocked event loop before authentication).
    many = gzip.compress(b"", mtime=0) * (1024 * 1024 // 20)
    with pytest.raises(IngestError) as caught:
        decode_body(many, "gzip", 1024 * 1024)
    assert caught.value.status == 400
    assert "gzip members" in str(caught.value)


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, gzip", "foo"])
async def test_other_content_codings_are_415(tmp_path, coding):
    async with app_client(bodies_settings(tmp_path)) as client:
        response = await client.post(
            "/webhooks/hook",
            data=gzip.compress(b'{"a": 1}'),
            headers={"Content-Type": "application/json", "Content-Encoding": coding},
        )
        assert response.status == 415
        assert "Content-Encoding" in (await response.json())["faultstring"]
        assert await (await client.get("/api/v1/triggerinstances")).json() == []


async def test_truncated_gzip_is_400(tmp_path):
    async with app_client(bodies_settings(tmp_path)) as client:
        response = await client.post(
            "/webhooks/hook",
            data=gzip.compress(BIG_JSON.encode())[:-100],
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert response.status == 400
        assert "gzip" in (await response.json())["faultstring"]


async def test_the_api_refuses_compressed_bodies(tmp_path):
    async with app_client(bodies_settings(tmp_path)) as client:
        response = await client.put(
            "/api/v1/keys/k",
            data=gzip.compress(b'{"value": "v"}'),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert response.status == 415
        assert "Content-Encoding" in (await response.json())["faultstring"]


# --- item 10: deep JSON on the API -----------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000
SUBSCRIPTION = "{subscription}"
JSON_ROUTES = [
    ("POST", "/api/v1/executions"),
    ("PUT", "/api/v1/executions/x"),
    ("PUT", "/api/v1/keys/k"),
    ("POST", "/api/v1/apikeys"),
    ("PUT", "/api/v1/apikeys/x"),
    ("PATCH", "/api/v1/apikeys/x/extend"),
    ("DELETE", "/api/v1/apikeys"),
    ("POST", "/api/v1/events/webhooks"),
    ("PATCH", f"/api/v1/events/webhooks/{SUBSCRIPTION}"),
    ("POST", f"/api/v1/events/webhooks/{SUBSCRIPTION}/rotate-secret"),
    ("POST", f"/api/v1/events/webhooks/{SUBSCRIPTION}/recover"),
    ("POST", "/api/v1/rules"),
    ("PUT", "/api/v1/rules/t.some_rule"),
]


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
async def test_deeply_nested_json_is_400_on_every_api_route(tmp_path, method, path):
    async with app_client(bodies_settings(tmp_path)) as client:
        if SUBSCRIPTION in path:
            created = await client.post(
                "/api/v1/events/webhooks", json={"url": "http://127.0.0.1:9/events"}
            )
            assert created.status == 201, await created.text()
            path = path.replace(SUBSCRIPTION, (await created.json())["id"])
        response = await client.request(
            method, path, data=DEEP, headers={"Content-Type": "application/json"}
        )
        assert response.status == 400, await response.text()
        assert "nests deeper than 64 levels" in (await response.json())["faultstring"]
        # Nested within the limit is the route's own business, never a 500.
        response = await client.request(method, path, data=b"[" * 60 + b"]" * 60)
        assert response.status < 500
