"""The event stream through real `hookyard serve` processes: the official `st2 execution
tail` and `st2 run --tail` following a running shell action's output, the stream's API-key
checks, and (on PostgreSQL) an event made by one process reaching a client of another."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.support.cli import start_server
from tests.support.sse import collect_until
from tests.support.st2 import ANSI, INSTALL_TIMEOUT, St2
from tests.support.workflow_pack import write_workflow_pack

# Waits for the CLI to connect, prints, waits, prints again: the first line must reach the
# CLI while the action runs (st2 tails only output made after it connects, as st2 does).
SLOW = "sleep 4; echo tail-first; sleep 3; echo tail-second >&2; echo tail-third"


def follow(st2: St2, *args: str) -> tuple[list[tuple[float, str]], int, float]:
    """Run `st2 *args`, timing each output line as it arrives: (lines, exit code, end)."""
    env = {**st2.env(), "PYTHONUNBUFFERED": "1"}  # the CLI's own writes reach the pipe
    proc = subprocess.Popen(
        [str(st2.cli), *args],
        env=env,
        cwd=st2.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic(), ANSI.sub("", line.rstrip("\n"))))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        code = proc.wait(60)
    finally:
        proc.kill()
        reader.join(10)
        assert proc.stdout is not None
        proc.stdout.close()
    return lines, code, time.monotonic()


def first_at(lines: list[tuple[float, str]], text: str) -> float:
    found = [at for at, line in lines if text in line]
    assert found, f"{text!r} not in {[line for _, line in lines]}"
    return found[0]


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_st2_execution_tail_follows_a_running_shell_action(serve, st2_cli: Path, tmp_path: Path):
    server, api_key = start_server(serve)
    st2 = St2(st2_cli, server.url, api_key, tmp_path / "home")
    started = st2.ok("run", "-a", "core.local", f"cmd={SLOW}")
    execution_id = started.split("st2 execution get ")[1].split()[0]

    lines, code, ended = follow(st2, "execution", "tail", execution_id)
    assert code == 0, lines
    text = [line for _, line in lines]
    first, second = first_at(lines, "tail-first"), first_at(lines, "tail-second")
    assert first < second
    # Live: the first line came while the action still slept.
    assert second - first > 1.5, lines
    assert text.index("tail-first") < text.index("tail-second") < text.index("tail-third")
    assert f"Execution {execution_id} has completed (status=succeeded)." in text
    assert ended - first > 1.5

    # Tailing a finished execution prints its stored output (GET /executions/<id>/output).
    again = st2.ok("execution", "tail", execution_id)
    assert "tail-first\ntail-second\ntail-third" in again
    assert f"Execution {execution_id} has completed (status=succeeded)." in again


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_st2_run_tail_follows_the_new_execution(serve, st2_cli: Path, tmp_path: Path):
    server, api_key = start_server(serve)
    st2 = St2(st2_cli, server.url, api_key, tmp_path / "home")
    lines, code, _ended = follow(st2, "run", "--tail", "core.local", f"cmd={SLOW}")
    assert code == 0, lines
    first, third = first_at(lines, "tail-first"), first_at(lines, "tail-third")
    assert third - first > 1.5, lines
    assert any("has completed (status=succeeded)" in line for _, line in lines), lines


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            first = response.readline()
            return response.status, {"first_line": first.decode()}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_stream_needs_a_valid_api_key(serve):
    server, api_key = start_server(serve)
    assert api_key is not None
    for path in ("/api/v1/stream", "/stream/v1/stream", "/stream/v1/executions/x/output"):
        status, body = get(server.url + path)
        assert status == 401, (path, body)
        assert "St2-Api-Key" in body["faultstring"]
        status, body = get(server.url + path + "?st2-api-key=hy_not_a_key")
        assert status == 401, (path, body)
    # st2's CLI sends the key in the query; a browser or curl may use the header.
    status, body = get(f"{server.url}/stream/v1/stream?st2-api-key={api_key}")
    assert status == 200 and body["first_line"].startswith("retry:")
    status, body = get(server.url + "/api/v1/stream", {"St2-Api-Key": api_key})
    assert status == 200
    # The server keeps serving.
    assert get(server.url + "/api/v1/stream?events=bogus", {"St2-Api-Key": api_key})[0] == 400


@pytest.mark.postgres
async def test_an_event_made_in_one_process_reaches_a_client_of_another(serve, pg_database):
    # `reader` serves the API only; `writer` stores the webhooks and runs the actions.
    reader = serve.start(store=pg_database, roles="api", name="reader")
    writer = serve.start(store=pg_database, roles="api,rules,actions", name="writer")
    events = "st2.trigger_instance__create,st2.execution.output__create"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{reader.url}/api/v1/stream", params={"events": events}) as stream:
            assert stream.status == 200
            posted = await http.post(
                f"{writer.url}/api/v1/webhooks/st2",
                json={"trigger": "core.st2.webhook", "payload": {"from": "writer"}},
            )
            assert posted.status == 202, await posted.text()
            started = await http.post(
                f"{writer.url}/api/v1/executions",
                json={"action": "core.local", "parameters": {"cmd": "echo across"}},
            )
            assert started.status == 201, await started.text()
            seen = await collect_until(
                stream,
                lambda es: any(
                    e.name == "st2.execution.output__create" and "across" in e.data["data"]
                    for e in es
                ),
            )
        instances = [e for e in seen if e.name == "st2.trigger_instance__create"]
        assert instances and instances[0].data["payload"] == {"from": "writer"}
        last_id = max(int(e.id) for e in seen)
        # Resuming on the writer's process: nothing after what the reader delivered...
        more = await http.post(
            f"{writer.url}/api/v1/webhooks/st2",
            json={"trigger": "core.st2.webhook", "payload": {"n": 2}},
        )
        assert more.status == 202
        async with http.get(
            f"{writer.url}/api/v1/stream",
            params={"events": "st2.trigger_instance__create"},
            headers={"Last-Event-ID": str(last_id)},
        ) as resumed:
            got = await collect_until(resumed, lambda es: bool(es))
        # ...but what came after it, though it was made before this client connected.
        assert got[0].data["payload"] == {"n": 2}
        assert int(got[0].id) > last_id


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_st2_run_tail_follows_a_workflows_tasks(serve, st2_cli: Path, tmp_path: Path):
    packs = tmp_path / "packs"
    write_workflow_pack(packs)
    server = serve.start(
        roles="api,actions,workflows",
        env={"HOOKYARD_PACKS_DIRS": f"[{packs}]", "HOOKYARD_AUTH__ENABLED": "false"},
    )
    st2 = St2(st2_cli, server.url, None, tmp_path / "home")
    ran = st2.ok("run", "--tail", "flows.slow8")
    # Each task's child execution, from the stream's events (context.orquesta.task_name,
    # context.parent.execution_id), in order, then the workflow's end. The stream is live
    # only: task1 may have started before the CLI connected (st2 alike).
    tasks = re.findall(r"Child execution \(task=(task\d)\) \w+ has (started|finished)", ran)
    expected = [(f"task{n}", step) for n in range(1, 9) for step in ("started", "finished")]
    assert tasks in (expected, expected[1:]), ran
    assert re.search(r"Execution \w+ has completed \(status=succeeded\)\.", ran), ran
