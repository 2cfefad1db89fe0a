"""StackStorm's example chains that link to other actions of its `examples` pack, unchanged
(tests/support/st2_chains/examples), with StackStorm's results.

`forloop_chain` runs against a real local HTTP server standing in for a GitHub
organisation page: it loops back to its first link once per full page of repositories,
and ends through its `on-failure: finished` link when a page is short — StackStorm's way
of breaking out of the loop, so the chain succeeds. The cancel and pause/resume examples
reach into a sub-chain and an Orquesta subworkflow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.config import AuthSettings, Settings, StoreSettings, WorkerSettings
from tests.support.chain_pack import write_examples_chain_pack

ENDED = ("succeeded", "failed", "canceled", "timeout", "abandoned")
PAGE_SIZE = 30  # the pagesize forloop_chain passes
LOOP = [
    "get_github_page",
    "parse_github_repos",
    "push_github_repos",
    "increase_index_and_check_condition",
]


def repositories(page: int, full_pages: int) -> list[str]:
    count = PAGE_SIZE if page <= full_pages else 4
    return [f"repo-{page}-{n}" for n in range(count)]


@pytest.fixture
def settings(tmp_path: Path, store_url: str) -> Settings:
    packs = tmp_path / "packs"
    write_examples_chain_pack(packs)
    return Settings(
        store=StoreSettings(url=store_url),
        workers=WorkerSettings(poll_interval=0.5, lease_seconds=5, max_chain_links=25),
        auth=AuthSettings(enabled=False),
        rules_dirs=(),
        packs_dirs=(str(packs),),
        roles=("api", "actions", "workflows"),
        base_dir=str(tmp_path),
    )


@pytest.fixture
def forloop_requirements() -> None:
    """What the examples pack's requirements.txt gives its forloop actions (the `test`
    extra installs them)."""
    for module in ("bs4", "requests", "six"):
        pytest.importorskip(module, reason="the examples pack's requirements")


@pytest.fixture
async def organisation() -> AsyncIterator[tuple[str, list[str]]]:
    """A GitHub-like organisation page: one full page of repositories, then a short one.
    Yields its URL and the `page` values asked for."""
    asked: list[str] = []

    async def page(request: web.Request) -> web.Response:
        asked.append(request.query.get("page", "<none>"))
        number = int(request.query.get("page") or 1)
        items = "".join(
            f'<h3><a href="/StackStorm-Exchange/{name}">{name}</a></h3>'
            for name in repositories(number, full_pages=1)
        )
        return web.Response(text=f"<html><body>{items}</body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/StackStorm-Exchange", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/StackStorm-Exchange")), asked
    finally:
        await server.close()


async def wait_ended(client, execution_id: str, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = await (await client.get(f"/api/v1/executions/{execution_id}")).json()
        if data["status"] in ENDED or time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.05)


async def test_forloop_chain_loops_once_per_full_page_and_ends_through_finished(
    forloop_requirements, client, organisation
) -> None:
    url, asked = organisation
    reply = await client.post(
        "/api/v1/executions",
        json={"action": "examples.forloop_chain", "parameters": {"github_organization_url": url}},
    )
    assert reply.status == 201, await reply.text()
    chain = await wait_ended(client, (await reply.json())["id"])
    assert chain["status"] == "succeeded", chain["result"]
    assert set(chain["result"]) == {"tasks", "published"}
    tasks = chain["result"]["tasks"]
    assert [t["name"] for t in tasks] == LOOP + LOOP + ["finished"]
    # The first pass has no index yet (an empty page); the second asks for page 2.
    assert asked == ["", "2"]
    states = [t["state"] for t in tasks]
    assert states == ["succeeded"] * 7 + ["failed", "succeeded"]
    first, second = tasks[1]["result"]["result"], tasks[5]["result"]["result"]
    assert sorted(first) == sorted(repositories(1, full_pages=1))
    assert first["repo-1-0"] == "https://github.com/StackStorm-Exchange/repo-1-0"
    assert sorted(second) == sorted(repositories(2, full_pages=1))
    assert tasks[3]["result"]["result"] == 2  # the next page's index
    assert tasks[7]["result"]["result"] == "Breaking out of the loop"
    pushed = tasks[2]["result"]["stdout"].split()
    assert sorted(pushed) == sorted(repositories(1, full_pages=1))
    # Every link is its own child execution, the looped ones too.
    children = await (
        await client.get(f"/api/v1/executions/{chain['id']}/children", params={"depth": 1})
    ).json()
    assert [c["id"] for c in children] == [t["execution_id"] for t in tasks]


async def test_forloop_chain_goes_to_failed_when_the_page_cannot_be_read(
    forloop_requirements, client
) -> None:
    # Nothing listens on port 9 (discard) here: the first link fails, on-failure: failed
    # runs `exit 1`, and the chain takes that link's status.
    reply = await client.post(
        "/api/v1/executions",
        json={
            "action": "examples.forloop_chain",
            "parameters": {"github_organization_url": "http://127.0.0.1:9/nowhere"},
        },
    )
    assert reply.status == 201, await reply.text()
    chain = await wait_ended(client, (await reply.json())["id"])
    assert chain["status"] == "failed", chain["result"]
    tasks = chain["result"]["tasks"]
    assert [(t["name"], t["state"]) for t in tasks] == [
        ("get_github_page", "failed"),
        ("failed", "failed"),
    ]
    assert "error" not in chain["result"]


async def start(client, action: str, **parameters) -> str:
    reply = await client.post(
        "/api/v1/executions", json={"action": action, "parameters": parameters}
    )
    assert reply.status == 201, await reply.text()
    return (await reply.json())["id"]


async def children_of(client, execution_id: str) -> list[dict]:
    reply = await client.get(f"/api/v1/executions/{execution_id}/children", params={"depth": 1})
    assert reply.status == 200
    return await reply.json()


async def wait_for(client, execution_id: str, status: str) -> dict:
    deadline = time.monotonic() + 30
    while (data := await (await client.get(f"/api/v1/executions/{execution_id}")).json())[
        "status"
    ] != status:
        assert time.monotonic() < deadline, f"{execution_id} never {status}: {data['status']}"
        await asyncio.sleep(0.05)
    return data


async def wait_for_children(client, execution_id: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 30
    while len(children := await children_of(client, execution_id)) < count:
        assert time.monotonic() < deadline, (
            f"fewer than {count} children of {execution_id}: "
            + str((await (await client.get(f"/api/v1/executions/{execution_id}")).json())["result"])
        )
        await asyncio.sleep(0.05)
    return children


async def test_data_jinja_filter_round_trips_an_object_through_json_and_yaml(client) -> None:
    chain = await wait_ended(client, await start(client, "examples.data_jinja_filter"))
    assert chain["status"] == "succeeded", chain["result"]
    tasks = chain["result"]["tasks"]
    assert [(t["name"], t["state"]) for t in tasks] == [
        ("c1", "succeeded"),
        ("c2", "succeeded"),
        ("c3", "succeeded"),
    ]
    returned = {"a": "b", "c": {"d": "e", "f": 1, "g": True}}
    assert [t["result"]["result"] for t in tasks] == [returned] * 3


async def test_chain_test_cancel_with_subworkflow_cancels_the_orquesta_workflow(
    client, tmp_path: Path
) -> None:
    marker = tmp_path / "hold"
    marker.write_text("")
    chain_id = await start(
        client, "examples.chain-test-cancel-with-subworkflow", tempfile=str(marker), message="m"
    )
    [subworkflow] = await wait_for_children(client, chain_id, 1)
    assert subworkflow["action"]["ref"] == "examples.orquesta-test-cancel"
    await wait_for_children(client, subworkflow["id"], 1)
    assert (await client.delete(f"/api/v1/executions/{chain_id}")).status == 200
    chain = await wait_ended(client, chain_id)
    assert chain["status"] == "canceled"
    assert [(t["name"], t["state"]) for t in chain["result"]["tasks"]] == [("task1", "canceled")]
    assert (await wait_ended(client, subworkflow["id"]))["status"] == "canceled"
    assert len(await children_of(client, chain_id)) == 1  # task2 never ran


@pytest.mark.parametrize(
    ("name", "inner"),
    [
        ("chain-test-pause-resume-with-subchain", "examples.chain-test-pause-resume"),
        ("chain-test-pause-resume-with-subworkflow", "examples.orquesta-test-pause-resume"),
    ],
)
async def test_pausing_a_chain_pauses_what_its_link_runs_and_resume_finishes_both(
    client, tmp_path: Path, name: str, inner: str
) -> None:
    marker = tmp_path / "hold"
    marker.write_text("")
    chain_id = await start(client, f"examples.{name}", tempfile=str(marker), message="hi")
    [sub] = await wait_for_children(client, chain_id, 1)
    assert sub["action"]["ref"] == inner
    await wait_for_children(client, sub["id"], 1)
    url = f"/api/v1/executions/{chain_id}"
    assert (await client.put(url, json={"status": "pausing"})).status == 200
    marker.unlink()  # the inner first task ends now; its second is held back
    await wait_for(client, sub["id"], "paused")
    await wait_for(client, chain_id, "paused")
    assert len(await children_of(client, sub["id"])) == 1
    assert len(await children_of(client, chain_id)) == 1
    assert (await client.put(url, json={"status": "resuming"})).status == 200
    chain = await wait_ended(client, chain_id)
    assert chain["status"] == "succeeded", chain["result"]
    tasks = chain["result"]["tasks"]
    assert [(t["name"], t["state"]) for t in tasks] == [
        ("task1", "succeeded"),
        ("task2", "succeeded"),
    ]
    assert tasks[1]["result"]["stdout"] == "foobar"
    assert (await wait_ended(client, sub["id"]))["status"] == "succeeded"
    assert len(await children_of(client, sub["id"])) == 2
