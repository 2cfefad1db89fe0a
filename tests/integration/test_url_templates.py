"""Payload values in an http-request URL (issue 15 item 6), end to end: a webhook, a rule
rendering core.http's `url`, the actions worker, and a real receiver on 127.0.0.1 that
records the exact request line it got."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.config import OutboundSettings, Settings
from tests.support.app import LOOPBACK, settings_for
from tests.support.packs import write_pack

HEARD = web.AppKey("heard", list)


async def record(request: web.Request) -> web.Response:
    request.app[HEARD].append(
        {"raw_path": request.raw_path, "path": request.path, "query": list(request.query.items())}
    )
    return web.json_response({"ok": True})


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list]]:
    app = web.Application()
    app[HEARD] = []
    app.router.add_route("*", "/{tail:.*}", record)
    async with TestServer(app, host="127.0.0.1") as server:
        yield f"http://127.0.0.1:{server.port}", app[HEARD]


def rule(name: str, url: str, **extra: object) -> str:
    parameters = {"url": url, **extra}
    lines = "\n".join(f"    {key}: {value!r}" for key, value in parameters.items())
    return (
        textwrap.dedent(f"""\
        name: {name}
        pack: t
        trigger: {{type: core.st2.webhook, parameters: {{url: {name}}}}}
        action:
          ref: core.http
          parameters:
        """)
        + lines.replace("'", '"')
        + "\n"
    )


def write_web_pack(packs: Path, base: str) -> None:
    """A pack whose http-request action builds its URL from a parameter in its metadata."""
    item = f"""\
        name: item
        runner_type: http-request
        parameters:
          id: {{type: string, required: true}}
          url: {{default: "{base}/items/{{{{ id }}}}?token=t"}}
        """
    meta = "ref: web\nname: web\ndescription: web\nversion: 1.0.0\nauthor: tests\n"
    write_pack(packs, "web", {"actions/item.yaml": item}, meta=meta)


@pytest.fixture
def settings(tmp_path, receiver) -> Settings:
    base, _ = receiver
    rules = {
        name: rule(name, url, **extra)
        for name, url, extra in [
            ("path", f"{base}/items/{{{{ trigger.body.id }}}}?token=t", {}),
            ("query", f"{base}/search?q={{{{ trigger.body.q }}}}&token=t", {}),
            ("whole", "{{ trigger.body.callback }}", {}),
            ("raw", f"{base}/{{{{ trigger.body.path | unquoted }}}}", {}),
            ("params", f"{base}/search", {"params": {"q": "{{ trigger.body.q }}"}}),
        ]
    }
    rules["meta"] = (
        "name: meta\npack: t\ntrigger: {type: core.st2.webhook, parameters: {url: meta}}\n"
        'action: {ref: web.item, parameters: {id: "{{ trigger.body.id }}"}}\n'
    )
    packs = tmp_path / "packs"
    write_web_pack(packs, base)
    return settings_for(
        tmp_path,
        rules=rules,
        packs=[packs],
        roles=("api", "rules", "actions"),
        outbound=OutboundSettings(allow_private=LOOPBACK),
    )


async def outcome(client, hook: str, body: dict) -> dict:
    """The enforcement of the one rule on `hook`, with its execution once it finished."""
    accepted = await (await client.post(f"/webhooks/{hook}", json=body)).json()
    # Generous bounds: a loaded machine. Not a timing assertion.
    for _ in range(1000):
        reply = await client.get(
            "/api/v1/ruleenforcements", params={"trigger_instance": accepted["id"]}
        )
        enforcements = await reply.json()
        if enforcements and enforcements[0]["status"] == "failed":
            return {"enforcement": enforcements[0]}
        if enforcements and enforcements[0].get("execution_id"):
            execution_id = enforcements[0]["execution_id"]
            execution = await (await client.get(f"/api/v1/executions/{execution_id}")).json()
            if execution["status"] in ("succeeded", "failed", "timeout", "abandoned"):
                return {"enforcement": enforcements[0], "execution": execution}
        await asyncio.sleep(0.03)
    raise AssertionError(f"no finished outcome for {hook}")


async def test_path_traversal_stays_one_encoded_segment(client, receiver):
    _, heard = receiver
    result = await outcome(client, "path", {"id": "../../admin/delete?all=1#"})
    assert result["execution"]["status"] == "succeeded", result
    assert len(heard) == 1
    assert heard[0]["path"] != "/admin/delete"
    assert heard[0]["raw_path"] == "/items/..%2F..%2Fadmin%2Fdelete%3Fall=1%23?token=t"
    assert heard[0]["path"] == "/items/../../admin/delete?all=1#"  # one segment, decoded
    assert heard[0]["query"] == [("token", "t")]


async def test_dot_segment_value_is_refused_before_anything_is_sent(client, receiver):
    _, heard = receiver
    result = await outcome(client, "path", {"id": ".."})
    assert result["enforcement"]["status"] == "failed"
    assert "'..' segment" in result["enforcement"]["failure_reason"]
    assert heard == []


async def test_query_value_cannot_add_a_parameter(client, receiver):
    _, heard = receiver
    result = await outcome(client, "query", {"q": "x&admin=1#frag"})
    assert result["execution"]["status"] == "succeeded", result
    assert heard[0]["query"] == [("q", "x&admin=1#frag"), ("token", "t")]


async def test_whole_url_template_is_allowed_and_validated(client, receiver):
    base, heard = receiver
    result = await outcome(client, "whole", {"callback": f"{base}/cb?x=1"})
    assert result["execution"]["status"] == "succeeded", result
    assert heard[0]["path"] == "/cb" and heard[0]["query"] == [("x", "1")]
    refused = await outcome(client, "whole", {"callback": "file:///etc/passwd"})
    assert refused["enforcement"]["status"] == "failed"
    assert "not an absolute http:// or https:// URL" in refused["enforcement"]["failure_reason"]
    assert len(heard) == 1


async def test_unquoted_is_the_authors_opt_out(client, receiver):
    _, heard = receiver
    result = await outcome(client, "raw", {"path": "a/b?c=d"})
    assert result["execution"]["status"] == "succeeded", result
    assert heard[0]["path"] == "/a/b" and heard[0]["query"] == [("c", "d")]


async def test_params_mapping_values_are_encoded_by_the_client(client, receiver):
    _, heard = receiver
    result = await outcome(client, "params", {"q": "x&admin=1 +#"})
    assert result["execution"]["status"] == "succeeded", result
    assert heard[0]["query"] == [("q", "x&admin=1 +#")]


async def test_url_template_in_action_metadata_encodes_given_values(client, receiver):
    _, heard = receiver
    result = await outcome(client, "meta", {"id": "../../admin/delete?all=1#"})
    assert result["execution"]["status"] == "succeeded", result
    assert heard[0]["raw_path"] == "/items/..%2F..%2Fadmin%2Fdelete%3Fall=1%23?token=t"
