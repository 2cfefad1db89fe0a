"""Rules through the API and execution cancel against a real `hookyard serve`, driven by
the `hookyard` client commands (auth on: the first admin key printed at start)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.cli import ALL_ROLES, Client, start_client
from tests.support.waiting import wait_for

RULE = {
    "name": "api_echo",
    "pack": "accept",
    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "api-hook"}},
    "criteria": {"trigger.body.go": {"type": "equals", "pattern": True}},
    "action": {"ref": "core.local", "parameters": {"cmd": "echo {{ trigger.body.n }}"}},
}


def api(client: Client, method: str, path: str, body=None) -> tuple[int, object]:
    request = urllib.request.Request(
        client.url + "/api/v1" + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "St2-Api-Key": client.api_key or ""},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


def post_hook(client: Client, n: int) -> str:
    request = urllib.request.Request(
        client.url + "/webhooks/api-hook",
        data=json.dumps({"go": True, "n": n}).encode(),
        headers={"Content-Type": "application/json", "St2-Api-Key": client.api_key or ""},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        accepted = json.load(response)
    return accepted.get("id") or accepted["trigger_instance"]


def processed(client: Client, instance_id: str) -> dict:
    def done():
        data = client.json("trigger-instance", "get", instance_id)
        return data if data["status"] in ("processed", "processing_failed") else None

    return wait_for(done, f"processed trigger instance {instance_id}")


def executions_of(client: Client, instance_id: str) -> list[dict]:
    return client.json("execution", "list", "--trigger-instance", instance_id)


@pytest.mark.slow
def test_api_rule_fires_then_disabled_does_not_then_deleted(serve):
    client = start_client(serve)
    status, created = api(client, "POST", "/rules", RULE)
    assert status == 201, created
    assert created["source"] == "api"

    fired = post_hook(client, 1)
    processed(client, fired)
    execution = wait_for(
        lambda: next((e for e in executions_of(client, fired) if e["status"] == "succeeded"), None),
        "succeeded execution of the API rule",
    )
    assert str(execution["result"]["stdout"]).strip() == "1"
    assert execution["rule"]["ref"] == "accept.api_echo"

    assert "disabled" in client.ok("rule", "disable", "accept.api_echo")
    assert client.json("rule", "get", "accept.api_echo")["enabled"] is False
    # With its only rule disabled the hook is not served (as in StackStorm): nothing fires.
    with pytest.raises(urllib.error.HTTPError) as refused_post:
        post_hook(client, 2)
    refused_post.value.close()
    assert refused_post.value.code == 404
    assert len(client.json("execution", "list", "--rule", "accept.api_echo")) == 1

    assert "enabled" in client.ok("rule", "enable", "accept.api_echo")
    again = post_hook(client, 3)
    processed(client, again)
    wait_for(lambda: executions_of(client, again), "execution after re-enabling")

    # A rule from a file is changed in its file: the CLI says which one.
    refused = client("rule", "disable", serve.rule_ref)
    assert refused.returncode != 0
    assert refused.stderr.startswith("error: ") and ".yaml" in refused.stderr

    assert "deleted" in client.ok("rule", "delete", "accept.api_echo")
    missing = client("rule", "get", "accept.api_echo")
    assert missing.returncode != 0 and "404" in missing.stderr


@pytest.mark.slow
def test_api_rules_survive_a_restart(serve):
    server_client = start_client(serve)
    assert api(server_client, "POST", "/rules", RULE)[0] == 201
    serve.processes[-1].terminate()
    # Same store file, new process; the admin key is in the store already.
    server = serve.start(roles=ALL_ROLES, env={"HOOKYARD_AUTH__ENABLED": "true"})
    client = Client(server.url, server_client.api_key)
    rules = client.json("rule", "list")
    assert {r["ref"]: r.get("source") for r in rules}.get("accept.api_echo") == "api"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


@pytest.mark.slow
def test_cancel_a_running_sleep_kills_it(serve, tmp_path: Path):
    client = start_client(serve)
    pid_file = tmp_path / "sleep.pid"
    command = f"cmd=echo $$ > {pid_file}; exec sleep 30"
    started = client.json("run", "core.local", command, "--async")
    execution_id = started["id"]
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the sleep's pid")
    pid = int(pid_file.read_text())
    assert pid_alive(pid)

    out = client.ok("execution", "cancel", execution_id)
    assert execution_id in out and ("canceling" in out or "canceled" in out)
    finished = wait_for(
        lambda: (e := client.json("execution", "get", execution_id))["status"] == "canceled" and e,
        "canceled execution",
    )
    assert [entry["status"] for entry in finished["log"]][-2:] == ["canceling", "canceled"]
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid), "the sleep survived the cancel"

    # Canceling it again is refused with StackStorm's message, on stderr, exit 1.
    again = client("execution", "cancel", execution_id)
    assert again.returncode == 1 and "already" in again.stderr


@pytest.mark.slow
def test_re_emit_many_ids_and_by_time(serve):
    client = start_client(serve)
    assert api(client, "POST", "/rules", RULE)[0] == 201
    first, second = post_hook(client, 1), post_hook(client, 2)
    for instance_id in (first, second):
        processed(client, instance_id)

    missing = "0" * 24
    result = client("trigger-instance", "re-emit", first, second, missing)
    # The good ones are re-emitted; the bad one is reported on stderr with exit 1.
    assert result.returncode == 1, result
    assert f"{first} -> " in result.stdout and f"{second} -> " in result.stdout
    assert "re-emitted 2 of 3 trigger instance(s)" in result.stdout
    assert f"error: {missing}: " in result.stderr and "404" in result.stderr
    copies = [line.split(" -> ")[1] for line in result.stdout.splitlines() if " -> " in line]
    for copy in copies:
        assert client.json("trigger-instance", "get", copy)["payload"]["body"]["go"] is True

    time.sleep(0.05)
    since = datetime.now(UTC).isoformat()
    third = post_hook(client, 3)
    processed(client, third)
    replayed = client.json("trigger-instance", "re-emit", "--since", since)
    assert replayed["original"] == third
    nothing = client("trigger-instance", "re-emit", "--all-failed")
    assert nothing.returncode == 0 and "no trigger instance matches" in nothing.stderr
