"""`hookyard run ACTION key=value...`: start an execution on a running server, like `st2 run`.

Values are typed by the action's and its runner's parameter schemas (`timeout=5` is the
integer 5, `env=A=1,B=2` an object), the execution is requested with
`POST /api/v1/executions`, then polled until it ends. Exit 0 only if it succeeded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from engine.cli.client import ApiClient, ClientError, path_part, server_command
from engine.cli.executions import EXECUTION_ORDER, execution_for_display
from engine.cli.output import print_json, show_object

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "timeout", "canceled", "abandoned"})
# Quick first polls for short actions, then at most one request a second.
FIRST_POLL_INTERVAL = 0.1
MAX_POLL_INTERVAL = 1.0
RUN_KEYS = ("id", "action", "status", "parameters", "start_timestamp", "end_timestamp", "result")
TRUE_WORDS = frozenset({"true", "yes", "y", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "n", "off", "0"})
# Words without `=` are joined into this parameter, as `st2 run core.local echo hi` does.
COMMAND_PARAMETER = "cmd"


class ParameterValueError(ClientError):
    """Raised when a key=value argument cannot be read as its parameter's type."""


def parse_arguments(
    arguments: Sequence[str], schemas: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """`key=value` words as typed parameters; `schemas` maps a name to its JSON schema."""
    parameters: dict[str, Any] = {}
    loose_words: list[str] = []
    for argument in arguments:
        name, sep, text = argument.partition("=")
        if not sep or not name:
            loose_words.append(argument)
            continue
        parameters[name] = typed_value(name, text, schemas.get(name) or {})
    if loose_words:
        if COMMAND_PARAMETER not in schemas:
            raise ParameterValueError(
                f"expected key=value, got {loose_words[0]!r}; the action's parameters are: "
                + ", ".join(sorted(schemas))
            )
        if COMMAND_PARAMETER in parameters:
            loose_words.insert(0, str(parameters[COMMAND_PARAMETER]))
        parameters[COMMAND_PARAMETER] = " ".join(loose_words)
    return parameters


def typed_value(name: str, text: str, schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):  # ["integer", "null"]: the first real type decides
        kind = next((k for k in kind if k != "null"), None)
    try:
        match kind:
            case "integer":
                return int(text)
            case "number":
                number = float(text)
                return int(number) if number.is_integer() and "." not in text else number
            case "boolean":
                return _boolean(text)
            case "array":
                return _array(text)
            case "object":
                return _object(text)
            case _:
                return text
    except ValueError as exc:
        raise ParameterValueError(f"{name}={text!r}: not a valid {kind}: {exc}") from None


def _boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("use true or false")


def _array(text: str) -> list[Any]:
    if text.lstrip().startswith("["):
        value = json.loads(text)
        if isinstance(value, list):
            return value
        raise ValueError("expected a JSON array")
    return [item.strip() for item in text.split(",") if item.strip()]


def _object(text: str) -> dict[str, Any]:
    if text.lstrip().startswith("{"):
        value = json.loads(text)
        if isinstance(value, dict):
            return value
        raise ValueError("expected a JSON object")
    result: dict[str, Any] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError('use {"k": "v"} or k=v,k2=v2')
        result[key.strip()] = value
    return result


def parameter_schemas(client: ApiClient, ref: str) -> dict[str, dict[str, Any]]:
    """The runner's parameters overlaid with the action's, as the server merges them."""
    action = client.get(f"/actions/{path_part(ref)}").data
    schemas: dict[str, dict[str, Any]] = {}
    runner_type = action.get("runner_type")
    if runner_type:
        runners = client.get("/runnertypes", {"name": runner_type}).data or []
        for runner in runners:
            schemas.update({k: dict(v) for k, v in (runner.get("runner_parameters") or {}).items()})
    for name, schema in (action.get("parameters") or {}).items():
        schemas[name] = {**schemas.get(name, {}), **schema}
    return schemas


def wait_for_end(client: ApiClient, execution: dict[str, Any]) -> dict[str, Any]:
    interval = FIRST_POLL_INTERVAL
    while execution.get("status") not in TERMINAL_STATUSES:
        time.sleep(interval)
        interval = min(interval * 2, MAX_POLL_INTERVAL)
        execution = client.get(f"/executions/{path_part(execution['id'])}").data
    return execution


@click.command("run")
@click.argument("action")
@click.argument("arguments", nargs=-1)
@click.option(
    "--async",
    "no_wait",
    is_flag=True,
    help="Print the execution id and return without waiting for the end.",
)
@server_command
def run_command(
    client: ApiClient, as_json: bool, action: str, arguments: tuple[str, ...], no_wait: bool
) -> None:
    """Run ACTION with key=value parameters and print its result.

    Exit 0 if the execution succeeded, 1 if it failed, timed out or was abandoned.
    """
    parameters = parse_arguments(arguments, parameter_schemas(client, action))
    execution = client.post("/executions", {"action": action, "parameters": parameters}).data
    if no_wait:
        if as_json:
            print_json(execution)
        else:
            click.echo(f"execution {execution['id']} {execution.get('status')}")
            click.echo(f"see it with: hookyard execution get {execution['id']}")
        raise SystemExit(1 if execution.get("status") == "failed" else 0)
    try:
        execution = wait_for_end(client, execution)
    except KeyboardInterrupt:
        click.echo(
            f"\nstopped waiting; execution {execution['id']} goes on: "
            f"hookyard execution get {execution['id']}",
            err=True,
        )
        raise SystemExit(130) from None
    if as_json:
        print_json(execution)
    else:
        shown = execution_for_display(execution)
        show_object({k: shown.get(k) for k in RUN_KEYS}, False, EXECUTION_ORDER)
    raise SystemExit(0 if execution.get("status") == "succeeded" else 1)
