"""The `hookyard` client commands against a real `hookyard serve` on loopback.

The server loads the repo's packs and example rules (rules/); a GitHub-style push to the
`github-push` webhook makes `examples.github_push_deploy` run `core.local`. When the
server has API keys on, the first admin key it prints at start is used as
HOOKYARD_API_KEY, so these tests also run the client's St2-Api-Key header.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from engine.cli.run import ParameterValueError, parse_arguments
from engine.config import Settings
from engine.model.apikeys import KEY_PATTERN

ROOT = Path(__file__).parents[2]
EXAMPLE_RULES = ROOT / "rules"
GITHUB_PUSH = json.loads((EXAMPLE_RULES / "samples" / "github_push.json").read_text())
ALL_ROLES = "api,rules,actions"
COMMAND_TIMEOUT = 60
WAIT_TIMEOUT = 20.0


class Client:
    """Runs `python -m engine ...` against one server, with its URL and key in the env."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url
        self.api_key = api_key

    def env(self) -> dict[str, str]:
        # No HOOKYARD_* from the test's own environment: only the server under test.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["HOOKYARD_URL"] = self.url
        if self.api_key:
            env["HOOKYARD_API_KEY"] = self.api_key
        return env

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def post_push(self) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "push"}
        if self.api_key:
            headers["St2-Api-Key"] = self.api_key
        request = urllib.request.Request(
            self.url + "/webhooks/github-push",
            data=json.dumps(GITHUB_PUSH["body"]).encode(),
            headers=headers,
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
            return json.load(response)


def start_server(serve):
    """Serve with the example rules and, where the server has API keys, auth on.

    A server with auth on prints its first admin key once, at start, on stdout: that key
    is what the client sends.
    """
    has_auth = "auth" in {f.name for f in dataclasses.fields(Settings)}
    env = {"HOOKYARD_AUTH__ENABLED": "true"} if has_auth else {}
    server = serve.start(roles=ALL_ROLES, env=env, args=["--rules", str(EXAMPLE_RULES)])
    found = KEY_PATTERN.search(server.log_text())
    assert found or not has_auth, f"no admin key printed at start:\n{server.log_tail()}"
    return server, found.group(0) if found else None


def start_client(serve) -> Client:
    server, api_key = start_server(serve)
    return Client(server.url, api_key)


def wait_for(check, what: str):
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"no {what} after {WAIT_TIMEOUT} s"
        time.sleep(0.1)


# --- typing of key=value arguments (no server) ---------------------------------------

SCHEMAS = {
    "cmd": {"type": "string"},
    "timeout": {"type": "integer"},
    "ratio": {"type": "number"},
    "sudo": {"type": "boolean"},
    "hosts": {"type": "array"},
    "env": {"type": "object"},
    "maybe": {"type": ["integer", "null"]},
}


def test_arguments_are_typed_by_the_parameter_schemas():
    parameters = parse_arguments(
        [
            "timeout=5",
            "ratio=0.5",
            "sudo=false",
            "hosts=a,b",
            "env=A=1,B=x=y",
            "maybe=3",
            "other=7",
            "cmd=echo a=b",
        ],
        SCHEMAS,
    )
    assert parameters == {
        "timeout": 5,
        "ratio": 0.5,
        "sudo": False,
        "hosts": ["a", "b"],
        "env": {"A": "1", "B": "x=y"},
        "maybe": 3,
        "other": "7",  # unknown parameters stay strings
        "cmd": "echo a=b",
    }
    json_forms = parse_arguments(['hosts=["x", 1]', 'env={"K": 2}'], SCHEMAS)
    assert json_forms == {"hosts": ["x", 1], "env": {"K": 2}}


def test_words_without_equals_become_the_command():
    assert parse_arguments(["echo", "hi", "timeout=3"], SCHEMAS) == {
        "cmd": "echo hi",
        "timeout": 3,
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["timeout=soon"], "timeout='soon': not a valid integer"),
        (["sudo=maybe"], "sudo='maybe': not a valid boolean: use true or false"),
        (["env=[1]"], "env='[1]': not a valid object"),
    ],
)
def test_a_value_that_does_not_fit_its_type_is_refused(arguments, message):
    with pytest.raises(ParameterValueError, match="^" + message.replace("[", r"\[")):
        parse_arguments(arguments, SCHEMAS)


def test_loose_words_need_a_cmd_parameter():
    with pytest.raises(ParameterValueError, match="expected key=value, got 'hello'"):
        parse_arguments(["hello"], {"message": {"type": "string"}})


# --- commands against a real server ---------------------------------------------------


@pytest.mark.slow
def test_a_webhook_is_traced_through_every_list_and_get_command(serve):
    client = start_client(serve)
    accepted = client.post_push()
    instance_id = accepted.get("id") or accepted.get("trigger_instance")
    assert instance_id, accepted

    def succeeded_execution():
        items = client.json("execution", "list", "--action", "core.local")
        return next((e for e in items if e["status"] in ("succeeded", "failed")), None)

    execution = wait_for(succeeded_execution, "finished core.local execution")
    assert execution["status"] == "succeeded", execution
    assert execution["trigger_instance"] == instance_id
    assert execution["result"]["stdout"].startswith("deploying acme/api at 0d1a26e")

    table = client.ok("execution", "list")
    assert execution["id"] in table
    row = next(line for line in table.splitlines() if execution["id"] in line)
    assert "core.local" in row and "succeeded" in row and "examples.github_push_deploy" in row
    assert client.json("execution", "list", "--status", "failed", "--action", "core.local") == []
    by_instance = client.json("execution", "list", "--trigger-instance", instance_id)
    assert [e["id"] for e in by_instance] == [execution["id"]]

    shown = client.ok("execution", "get", execution["id"])
    assert "status:           succeeded" in shown
    assert "stdout: deploying acme/api" in shown
    assert client.json("execution", "get", execution["id"])["id"] == execution["id"]

    instances = client.ok("trigger-instance", "list", "--webhook", "github-push")
    assert instance_id in instances and "core.st2.webhook" in instances
    instance = client.json("trigger-instance", "get", instance_id)
    assert instance["payload"]["body"]["after"] == GITHUB_PUSH["body"]["after"]
    assert "x-github-event: push" in client.ok("trigger-instance", "get", instance_id)

    enforcements = client.json("enforcement", "list", "--trigger-instance", instance_id)
    assert [(e["rule"]["ref"], e["execution_id"]) for e in enforcements] == [
        ("examples.github_push_deploy", execution["id"])
    ]
    assert client.json("enforcement", "list", "--rule", "examples.stripe_large_payment") == []
    assert execution["id"] in client.ok(
        "enforcement", "list", "--rule", "examples.github_push_deploy"
    )

    re_emitted = client.ok("trigger-instance", "re-emit", instance_id)
    assert f"Trigger instance {instance_id} successfully re-sent" in re_emitted
    assert len(client.json("trigger-instance", "list", "--webhook", "github-push")) == 2


@pytest.mark.slow
def test_rule_and_webhook_commands_show_the_loaded_rules(serve):
    client = start_client(serve)
    rules = client.ok("rule", "list")
    assert "examples.github_push_deploy" in rules
    assert "core.st2.webhook (github-push)" in rules
    refs = [r["ref"] for r in client.json("rule", "list", "--action", "core.local")]
    assert refs == ["examples.github_push_deploy"]

    rule = client.json("rule", "get", "examples.github_push_deploy")
    assert rule["action"]["ref"] == "core.local"
    text = client.ok("rule", "get", "examples.stripe_large_payment")
    assert text.startswith("ref:") and "core.http" in text

    missing = client("rule", "get", "examples.nope")
    assert missing.returncode != 0
    assert missing.stderr.count("\n") == 1 and "examples.nope" in missing.stderr
    assert "(HTTP 404)" in missing.stderr

    hooks = client.ok("webhook", "list")
    row = next(line for line in hooks.splitlines() if line.startswith("github-push"))
    assert "/webhooks/github-push" in row and "examples.github_push_deploy" in row
    assert {h["name"] for h in client.json("webhook", "list")} >= {"github-push", "stripe"}

    if client.api_key:  # the server checks keys: without one, the 401 in one line
        refused = Client(client.url, None)("rule", "list")
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and "(HTTP 401)" in refused.stderr
        assert "set HOOKYARD_API_KEY" in refused.stderr

    # The local subcommands still work beside the server ones.
    validate = client("rule", "validate", str(EXAMPLE_RULES / "github_push.yaml"))
    assert validate.returncode == 0 and validate.stdout.startswith("ok: 1 rule(s)")


@pytest.mark.slow
def test_run_waits_prints_the_result_and_exits_by_status(serve):
    client = start_client(serve)
    said_hi = client("run", "core.local", "cmd=echo hi")
    assert said_hi.returncode == 0, said_hi.stderr
    assert "status:          succeeded" in said_hi.stdout
    assert "stdout: hi" in said_hi.stdout

    failed = client("run", "core.local", "cmd=false")
    assert failed.returncode == 1, failed.stdout
    assert "status:          failed" in failed.stdout and "return_code: 1" in failed.stdout

    typed = client.json("run", "core.local", "timeout=7", "echo", "typed")
    assert typed["parameters"] == {"cmd": "echo typed", "timeout": 7}
    assert typed["result"]["stdout"] == "typed"

    queued = client("run", "core.local", "cmd=echo later", "--async")
    assert queued.returncode == 0, queued.stderr
    execution_id = queued.stdout.split()[1]
    assert f"hookyard execution get {execution_id}" in queued.stdout
    done = wait_for(
        lambda: (e := client.json("execution", "get", execution_id))["status"] == "succeeded" and e,
        "succeeded async execution",
    )
    assert done["result"]["stdout"] == "later"

    unknown = client("run", "nope.missing", "x=1")
    assert unknown.returncode != 0 and unknown.stdout == ""
    assert unknown.stderr.count("\n") == 1
    assert unknown.stderr.startswith("error: ") and "nope.missing" in unknown.stderr

    bad_value = client("run", "core.local", "cmd=true", "timeout=soon")
    assert bad_value.returncode != 0
    assert bad_value.stderr == "error: timeout='soon': not a valid integer: " + (
        "invalid literal for int() with base 10: 'soon'\n"
    )


def test_an_unreachable_server_is_one_clear_line():
    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    client = Client(url, None)
    for args in (("execution", "list"), ("run", "core.local", "cmd=true"), ("rule", "list")):
        result = client(*args)
        assert result.returncode == 1, args
        assert result.stdout == ""
        assert result.stderr == (
            f"error: cannot reach hookyard at {url}: connection refused "
            "(is `hookyard serve` running there?)\n"
        )
