"""Inquiries on a real `hookyard serve`: the official `st2 inquiry list|get|respond` and
`hookyard inquiry ...` answer StackStorm's ask examples (copied unchanged,
tests/support/st2_ask); a server killed with SIGKILL while a workflow waits on an
inquiry is restarted, the answer given then, and the workflow finishes — on a SQLite
file and on PostgreSQL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import Client
from tests.support.inquiries import copy_ask_examples
from tests.support.st2 import St2

pytestmark = [pytest.mark.slow]

ROLES = "api,actions,workflows"
ENDED = ("succeeded", "failed", "canceled", "timeout", "abandoned")


def api(url: str, path: str, body: Any = None, method: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json"}, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def wait_status(url: str, execution_id: str, wanted: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        _, execution = api(url, f"/api/v1/executions/{execution_id}")
        if execution["status"] == wanted:
            return execution
        assert execution["status"] not in ENDED, execution
        assert time.monotonic() < deadline, f"{execution_id} is {execution['status']}"
        time.sleep(0.05)


def wait_inquiries(url: str, count: int, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        _, found = api(url, "/api/v1/inquiries")
        if len(found) == count:
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def start(url: str, action: str) -> str:
    status, created = api(url, "/api/v1/executions", {"action": action, "parameters": {}})
    assert status == 201, created
    return created["id"]


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    folder = tmp_path / "packs"
    copy_ask_examples(folder)
    return folder


def serve_env(packs: Path) -> dict[str, str]:
    return {"HOOKYARD_PACKS_DIRS": f"[{packs}]", "HOOKYARD_AUTH__ENABLED": "false"}


def test_st2_inquiry_list_get_and_respond(serve, st2_cli, packs: Path, tmp_path: Path) -> None:
    server = serve.start(roles=ROLES, env=serve_env(packs))
    st2 = St2(st2_cli, server.url, None, tmp_path / "home")
    started = st2.ok("run", "examples.orquesta-ask-basic", "-a")
    workflow_id = re.search(r"st2 execution get ([0-9a-f]+)", started).group(1)
    wait_status(server.url, workflow_id, "paused")
    [inquiry] = wait_inquiries(server.url, 1)

    listed = st2.ok("inquiry", "list")
    assert inquiry["id"] in listed and "1440" in listed, listed
    got = st2.ok("inquiry", "get", inquiry["id"])
    assert "approved" in got and "Continue?" in got, got
    as_json = st2.json("inquiry", "get", inquiry["id"])
    assert as_json["schema"]["properties"]["approved"]["type"] == "boolean"

    wrong = st2("inquiry", "respond", inquiry["id"], "-r", '{"approved": "sure"}')
    assert wrong.returncode != 0
    assert "did not pass schema validation" in wrong.stdout + wrong.stderr
    assert wait_status(server.url, workflow_id, "paused")

    answered = st2.ok("inquiry", "respond", inquiry["id"], "-r", '{"approved": true}')
    assert f"Response accepted for inquiry {inquiry['id']}." in answered
    done = wait_status(server.url, workflow_id, "succeeded")
    assert done["status"] == "succeeded"
    assert inquiry["id"] not in st2.ok("inquiry", "list")
    # st2 reads the inquiry first; answered, it is a 400 (as StackStorm's check_inquiry),
    # which the CLI reports as a missing resource — as it does against StackStorm.
    again = st2("inquiry", "respond", inquiry["id"], "-r", '{"approved": true}')
    assert again.returncode != 0
    assert "doesn't exist" in again.stdout
    status, refused = api(server.url, f"/api/v1/inquiries/{inquiry['id']}")
    assert status == 400
    assert refused["faultstring"] == f'Inquiry "{inquiry["id"]}" has already been responded to.'


def test_hookyard_inquiry_list_get_and_respond(serve, packs: Path) -> None:
    server = serve.start(roles=ROLES, env=serve_env(packs))
    client = Client(server.url, None)
    workflow_id = start(server.url, "examples.orquesta-ask-parallel")
    wait_status(server.url, workflow_id, "paused")
    asked = wait_inquiries(server.url, 2)
    listed = client.json("inquiry", "list")
    assert sorted(item["id"] for item in listed) == sorted(item["id"] for item in asked)
    table = client.ok("inquiry", "list")
    assert all(item["id"] in table for item in asked)
    shown = client.ok("inquiry", "get", asked[0]["id"])
    assert "approved" in shown and "schema:" in shown

    not_json = client("inquiry", "respond", asked[0]["id"], "-r", "{nope")
    assert not_json.returncode != 0 and "not JSON" in not_json.stderr
    wrong = client("inquiry", "respond", asked[0]["id"], "-r", '{"approved": 1}')
    assert wrong.returncode != 0 and "approved" in wrong.stderr
    unknown = client("inquiry", "respond", "nope", "-r", '{"approved": true}')
    assert unknown.returncode != 0 and "not found" in unknown.stderr
    first, second = asked
    out = client.ok("inquiry", "respond", first["id"], "-r", '{"approved": true}')
    assert f"Response accepted for inquiry {first['id']}." in out
    # Without -r each property is asked for, as `st2 inquiry respond` does.
    typed = subprocess.run(
        [sys.executable, "-m", "engine", "inquiry", "respond", second["id"]],
        input="maybe\n",
        env=client.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert typed.returncode != 0 and "approved" in typed.stderr  # not a boolean: refused
    typed = subprocess.run(
        [sys.executable, "-m", "engine", "inquiry", "respond", second["id"]],
        input="yes\n",
        env=client.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert typed.returncode == 0, typed.stderr
    assert "(approved)" in typed.stdout
    assert f"Response accepted for inquiry {second['id']}." in typed.stdout
    assert wait_status(server.url, workflow_id, "succeeded")["status"] == "succeeded"
    assert "no inquiries" in client.ok("inquiry", "list")


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_workflow_waiting_on_an_inquiry_survives_kill_9(
    serve, packs: Path, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    store = (
        f"sqlite:///{tmp_path / 'inquiries.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    first = serve.start(store=store, roles=ROLES, env=serve_env(packs))
    workflow_id = start(first.url, "examples.orquesta-ask-nested")
    wait_status(first.url, workflow_id, "paused")
    [inquiry] = wait_inquiries(first.url, 1)
    first.kill()

    second = serve.start(store=store, roles=ROLES, env=serve_env(packs), name="restarted")
    # Still waiting after the restart: nothing ran on, nothing was lost.
    assert wait_status(second.url, workflow_id, "paused")["status"] == "paused"
    assert [item["id"] for item in wait_inquiries(second.url, 1)] == [inquiry["id"]]
    status, answered = api(
        second.url,
        f"/api/v1/inquiries/{inquiry['id']}",
        {"id": inquiry["id"], "response": {"approved": True}},
        method="PUT",
    )
    assert status == 200, answered
    done = wait_status(second.url, workflow_id, "succeeded")
    assert done["status"] == "succeeded"
    _, children = api(second.url, f"/api/v1/executions/{workflow_id}/children?depth=-1")
    names = sorted(child["context"]["orquesta"]["task_name"] for child in children)
    # Each task ran once: the parent's three and the subworkflow's three.
    assert names == ["finish", "finish", "get_approval", "get_approval", "start", "start"]
    assert all(child["status"] == "succeeded" for child in children)
