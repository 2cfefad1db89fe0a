"""The `hookyard` client commands against a real `hookyard serve` on loopback.

The server loads the repo's packs and example rules (rules/); a GitHub-style push to the
`github-push` webhook makes `examples.github_push_deploy` run `core.local`. When the
server has API keys on, the first admin key it prints at start is used as
HOOKYARD_API_KEY, so these tests also run the client's St2-Api-Key header.
"""

from __future__ import annotations

import socket

import pytest

from engine.cli.run import ParameterValueError, parse_arguments
from tests.support.cli import (
    EXAMPLE_RULES,
    GITHUB_PUSH,
    Client,
    start_client,
)
from tests.support.waiting import wait_for

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
