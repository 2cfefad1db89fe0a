"""The official StackStorm CLI (`st2`, st2client 3.9.0) against a real `hookyard serve`.

st2client pins versions that clash with ours, so it lives in its own virtualenv at
`<repo>/.st2venv`, created once and reused across runs. Each `st2` runs with an isolated
HOME and config file, pointed at the server with ST2_API_URL (and ST2_API_KEY when the
server has API keys on: the first admin key it prints at start).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.app import REPO_ROOT as ROOT
from tests.support.cli import GITHUB_PUSH, start_server
from tests.support.st2 import COMMAND_TIMEOUT, INSTALL_TIMEOUT, WAIT_TIMEOUT, St2

# The first test may have to install st2client; a cached venv makes it a matter of seconds.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(INSTALL_TIMEOUT + 120)]


def start(serve, st2_cli: Path, tmp_path: Path) -> St2:
    server, api_key = start_server(serve)
    return St2(st2_cli, server.url, api_key, tmp_path / "home")


def push_and_wait(st2: St2) -> tuple[str, dict[str, Any]]:
    """POST the GitHub sample push; return the trigger instance id and its execution."""
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push"}
    if st2.api_key:
        headers["St2-Api-Key"] = st2.api_key
    request = urllib.request.Request(
        st2.url + "/webhooks/github-push",
        data=json.dumps(GITHUB_PUSH["body"]).encode(),
        headers=headers,
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        accepted = json.load(response)
    instance_id = accepted.get("id") or accepted.get("trigger_instance")
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        executions = st2.api(f"/api/v1/executions?trigger_instance={instance_id}")
        if executions and executions[0]["status"] in ("succeeded", "failed"):
            return instance_id, executions[0]
        assert time.monotonic() < deadline, f"no finished execution after {WAIT_TIMEOUT} s"
        time.sleep(0.1)


def test_st2_run_and_execution_commands(serve, st2_cli, tmp_path):
    st2 = start(serve, st2_cli, tmp_path)

    ran = st2("run", "core.local", "cmd=date")
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    assert re.search(r"^status: succeeded", ran.stdout, re.MULTILINE), ran.stdout
    assert re.search(r"^\s+return_code: 0", ran.stdout, re.MULTILINE), ran.stdout
    execution_id = re.search(r"^id: ([0-9a-f]+)$", ran.stdout, re.MULTILINE).group(1)

    failed = st2("run", "core.local", "cmd=exit 3", "-j")
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    failed_json = json.loads(failed.stdout)
    assert failed_json["status"] == "failed" and failed_json["result"]["return_code"] == 3

    listed = st2.json("execution", "list")
    assert {e["id"]: e["status"] for e in listed} == {
        execution_id: "succeeded",
        failed_json["id"]: "failed",
    }
    assert listed[0]["action"] == {"ref": "core.local"}
    table = st2.ok("execution", "list")
    row = next(line for line in table.splitlines() if execution_id in line)
    assert "core.local" in row and "succeeded" in row

    got = st2.json("execution", "get", execution_id)
    assert got["status"] == "succeeded" and got["parameters"] == {"cmd": "date"}
    assert "succeeded" in st2.ok("execution", "get", execution_id)

    action = st2.ok("action", "get", "core.local")
    assert re.search(r"\|\s*runner_type\s*\|\s*local-shell-cmd\s*\|", action), action
    missing = st2("action", "get", "core.nope")
    assert missing.returncode != 0 and 'Action "core.nope" is not found.' in missing.stdout


def test_st2_rule_webhook_trigger_instance_and_enforcement_lists(serve, st2_cli, tmp_path):
    st2 = start(serve, st2_cli, tmp_path)
    instance_id, execution = push_and_wait(st2)
    assert execution["status"] == "succeeded", execution

    rules = st2.ok("rule", "list")
    for ref in (
        "examples.github_push_deploy",
        "examples.stripe_large_payment",
        "examples.deploy_failed_alert",
    ):
        assert ref in rules
    assert {r["ref"] for r in st2.json("rule", "list", "--pack", "examples")} >= {
        "examples.github_push_deploy"
    }
    rule = st2.json("rule", "get", "examples.github_push_deploy")
    assert rule["action"]["ref"] == "core.local"

    hooks = st2.ok("webhook", "list")
    assert re.search(r"\|\s*github-push\s*\|\s*core\.st2\.webhook\s*\|", hooks), hooks
    assert "stripe" in hooks

    instances = st2.ok("trigger-instance", "list")
    assert instance_id in instances and "core.st2.webhook" in instances
    instance = st2.json("trigger-instance", "get", instance_id)
    assert instance["payload"]["body"]["after"] == GITHUB_PUSH["body"]["after"]

    enforcements = st2.json("rule-enforcement", "list")
    assert [
        (e["rule"]["ref"], e["trigger_instance_id"], e["execution_id"]) for e in enforcements
    ] == [("examples.github_push_deploy", instance_id, execution["id"])]
    assert execution["id"] in st2.ok("rule-enforcement", "list")

    re_emitted = st2("trigger-instance", "re-emit", instance_id)
    assert re_emitted.returncode == 0, (re_emitted.stdout, re_emitted.stderr)
    assert f"Trigger instance {instance_id} successfully re-sent" in re_emitted.stdout
    assert len(st2.api("/api/v1/triggerinstances?webhook=github-push")) == 2

    if st2.api_key:  # the server checks keys: without one st2 gets the faultstring
        refused = st2("rule", "list", with_key=False)
        assert refused.returncode == 1
        assert "401 Client Error" in refused.stdout + refused.stderr


API_RULE = {
    "name": "st2_made",
    "pack": "accept",
    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "st2-made"}},
    "action": {"ref": "core.local", "parameters": {"cmd": "true"}},
}


def test_st2_rule_create_disable_enable_delete(serve, st2_cli, tmp_path):
    st2 = start(serve, st2_cli, tmp_path)
    rule_file = tmp_path / "st2_made.json"
    rule_file.write_text(json.dumps(API_RULE))
    created = st2.json("rule", "create", str(rule_file))
    assert created["ref"] == "accept.st2_made" and created["source"] == "api"

    st2.ok("rule", "disable", "accept.st2_made")
    assert st2.api("/api/v1/rules/accept.st2_made")["enabled"] is False
    st2.ok("rule", "enable", "accept.st2_made")
    assert st2.api("/api/v1/rules/accept.st2_made")["enabled"] is True

    # A rule from a file: Hookyard refuses (409) and names the file to edit.
    refused = st2("rule", "disable", "examples.github_push_deploy")
    assert refused.returncode != 0
    assert "github_push_deploy" in refused.stdout + refused.stderr

    st2.ok("rule", "delete", "accept.st2_made")
    assert "accept.st2_made" not in st2.ok("rule", "list")


def test_st2_execution_cancel(serve, st2_cli, tmp_path):
    st2 = start(serve, st2_cli, tmp_path)
    started = st2.ok("run", "core.local", "cmd=sleep 30", "--async")
    execution_id = re.search(r"st2 execution get ([0-9a-f]+)", started).group(1)
    deadline = time.monotonic() + WAIT_TIMEOUT
    while st2.api(f"/api/v1/executions/{execution_id}")["status"] != "running":
        assert time.monotonic() < deadline, "the sleep never started"
        time.sleep(0.1)

    out = st2.ok("execution", "cancel", execution_id)
    assert f"execution with id {execution_id} canceled." in out.lower()
    while st2.api(f"/api/v1/executions/{execution_id}")["status"] != "canceled":
        assert time.monotonic() < deadline + WAIT_TIMEOUT, "never canceled"
        time.sleep(0.1)
    again = st2.ok("execution", "cancel", execution_id)
    assert 'already in "canceled" state' in again


def test_st2_key_set_get_list_delete(serve, st2_cli, tmp_path):
    st2 = start(serve, st2_cli, tmp_path)
    assert "deploy_target" in st2.ok("key", "set", "deploy_target", "staging")
    got = st2.json("key", "get", "deploy_target")
    assert (got["name"], got["value"]) == ("deploy_target", "staging")
    assert got["scope"] in ("system", "st2kv.system")

    # A secret is stored encrypted and comes back masked unless decrypted by an admin.
    st2.ok("key", "set", "api_token", "s3cr3t-value", "-e")
    hidden = st2.json("key", "get", "api_token")
    assert hidden["secret"] is True and hidden["value"] != "s3cr3t-value"
    revealed = st2.json("key", "get", "api_token", "-d")
    assert revealed["value"] == "s3cr3t-value"

    listed = st2.ok("key", "list")
    assert "deploy_target" in listed and "api_token" in listed
    assert "s3cr3t-value" not in listed

    deleted = st2("key", "delete", "deploy_target")
    assert deleted.returncode == 0, deleted.stderr
    assert "successfully deleted" in deleted.stdout
    missing = st2("key", "get", "deploy_target")
    assert missing.returncode != 0
    assert "deploy_target" not in st2.ok("key", "list")


def test_st2_run_with_an_operator_key_is_limited_to_its_grants(serve, st2_cli, tmp_path):
    st2 = start(serve, st2_cli, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
    created = subprocess.run(
        [
            *(sys.executable, "-m", "engine", "apikey", "create", "ci", "--role", "operator"),
            *("--action", "core.noop", "--store", serve.default_store),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=COMMAND_TIMEOUT,
    )
    assert created.returncode == 0, created.stderr
    operator = St2(st2_cli, st2.url, created.stdout.strip(), tmp_path / "operator-home")

    assert operator.json("run", "core.noop")["status"] == "succeeded"
    refused = operator("run", "core.local", "cmd=id")
    assert refused.returncode == 1
    assert (
        "MESSAGE: key 'ci' (role operator) may not run core.local: no grant for pack 'core' "
        "or action 'core.local' (grants: core.noop)"
    ) in refused.stdout + refused.stderr
    # The refused run left nothing behind: only the noop ran.
    assert len(st2.api("/api/v1/executions")) == 1


def test_st2_trigger_timer_and_sensor_lists(serve, st2_cli, tmp_path):
    """`st2 trigger list|get`, `st2 timer list`, `st2 sensor list` on StackStorm's own
    examples sensor and trigger files (tests/support/st2_examples)."""
    rules = tmp_path / "timer_rules"
    rules.mkdir()
    (rules / "timer.yaml").write_text(
        "name: every_minute\npack: t\n"
        "trigger: {type: core.st2.IntervalTimer, parameters: {unit: minutes, delta: 1}}\n"
        "action: {ref: core.noop}\n"
    )
    examples = ROOT / "tests" / "support" / "st2_examples"
    server = serve.start(
        roles="api",
        env={"HOOKYARD_AUTH__ENABLED": "false"},
        args=["--rules", str(rules), "--packs", str(examples)],
    )
    st2 = St2(st2_cli, server.url, None, tmp_path / "home")
    types = {t["ref"]: t for t in st2.json("trigger", "list")}
    assert types["examples.fibonacci"]["pack"] == "examples"
    assert "core.st2.generic.actiontrigger" in types
    got = st2.json("trigger", "get", "examples.fibonacci")
    assert got["payload_schema"]["properties"]["count"] == {"type": "number"}
    timers = st2.json("timer", "list")
    assert [(t["type"], t["parameters"]) for t in timers] == [
        ("core.st2.IntervalTimer", {"unit": "minutes", "delta": 1})
    ]
    sensors = st2.json("sensor", "list")
    assert [(s["ref"], s["enabled"]) for s in sensors] == [("examples.FibonacciSensor", True)]


def test_st2_whoami_apikey_and_key_prefix(serve, st2_cli, tmp_path):
    """`st2 whoami`, `st2 apikey create|list|get|disable|delete`, `st2 key list --prefix`."""
    st2 = start(serve, st2_cli, tmp_path)
    whoami = st2.ok("whoami")
    admin = next(k for k in st2.api("/api/v1/apikeys") if k["key_prefix"] in st2.api_key)
    assert f'Currently logged in as "{admin["name"]}".' in whoami
    assert "Authentication method: api key" in whoami
    assert " - Roles: admin" in whoami

    new_key = st2.ok("apikey", "create", "-k").strip()  # -k: only the key is printed
    assert new_key.startswith("hy_")
    listed = st2.json("apikey", "list")
    new_id = next(k["id"] for k in listed if k["id"] not in (admin["id"],))
    assert st2.json("apikey", "get", new_id)["id"] == new_id
    # Made with st2's empty body: an observer, which may read but not manage keys.
    observer = St2(st2_cli, st2.url, new_key, tmp_path / "observer-home")
    assert " - Roles: observer" in observer.ok("whoami")
    assert observer("apikey", "list").returncode != 0

    assert st2("apikey", "disable", new_id).returncode == 0
    assert "Currently logged in" not in observer.ok("whoami")  # st2 prints why, exit 0
    assert observer("key", "list").returncode != 0
    deleted = st2("apikey", "delete", new_id)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert new_id not in {k["id"] for k in st2.json("apikey", "list")}

    for name in ("deploy.target", "deploy.region", "other"):
        st2.ok("key", "set", name, "x")
    prefixed = st2.ok("key", "list", "--prefix", "deploy.")
    assert "deploy.target" in prefixed and "deploy.region" in prefixed
    assert "other" not in prefixed
