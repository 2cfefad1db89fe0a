"""Inquiries (StackStorm's `core.ask`, runner type `inquirer`), the pure part: what an ask
records, whether its schema is one, whether a response fits it, who may give it.

StackStorm has no inquiry record of its own: an inquiry is the ask's execution, `pending`,
whose result holds what was asked — `{"schema", "roles", "users", "route", "ttl"}` — and
which a valid response ends `succeeded` with that result plus `"response"`. Hookyard keeps
that shape (the API and the st2 CLI read it) and adds an index row for listing and expiry
(engine.store.ops.inquiries).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from engine.errors import ActionError, EngineError
from engine.packs.parameters import to_json_schema, validator_for

RUNNER_TYPE = "inquirer"
# StackStorm's default schema (contrib/runners/inquirer_runner/runner.yaml).
DEFAULT_SCHEMA: dict[str, Any] = {
    "title": "response_data",
    "type": "object",
    "properties": {
        "continue": {
            "type": "boolean",
            "description": "Would you like to continue the workflow?",
            "required": True,
        }
    },
}
DEFAULT_TTL_MINUTES = 1440
# The runner parameters of `inquirer`, as StackStorm declares them.
RUNNER_PARAMETERS: dict[str, dict[str, Any]] = {
    "schema": {
        "type": "object",
        "default": DEFAULT_SCHEMA,
        "required": True,
        "description": "A JSON schema that will be used to validate the response data",
    },
    "route": {
        "type": "string",
        "default": "",
        "description": "An arbitrary value for allowing rules to route to proper "
        "notification channel",
    },
    "roles": {
        "type": "array",
        "default": [],
        "description": "A list of roles that are permitted to respond to the action "
        "(if nothing provided, all are permitted)",
    },
    "users": {
        "type": "array",
        "default": [],
        "description": "A list of usernames that are permitted to respond to the action "
        "(if nothing provided, all are permitted)",
    },
    "ttl": {
        "type": "integer",
        "default": DEFAULT_TTL_MINUTES,
        "required": True,
        "description": "Time (in minutes) to wait before timing out the inquiry if no "
        "response is received",
    },
}
# A response is a person's answer, not a data transfer: kept small so that the workflow
# state that publishes it stays small too.
MAX_RESPONSE_BYTES = 64 * 1024
MAX_SCHEMA_BYTES = 64 * 1024


class InquiryError(EngineError):
    """Raised when a response does not fit its inquiry (wrong shape, too big)."""


def asked(runner_parameters: Mapping[str, Any]) -> dict[str, Any]:
    """What an ask records as its pending result; ActionError when its schema is no JSON
    schema or its other parameters are the wrong shape (the ask then fails at once)."""
    schema = runner_parameters.get("schema")
    schema = DEFAULT_SCHEMA if schema is None else schema
    check_schema(schema)
    roles = _names(runner_parameters.get("roles"), "roles")
    users = _names(runner_parameters.get("users"), "users")
    route = runner_parameters.get("route")
    route = "" if route is None else route
    if not isinstance(route, str):
        raise ActionError(f"core.ask: 'route' must be a string, got {type(route).__name__}")
    ttl = runner_parameters.get("ttl")
    ttl = DEFAULT_TTL_MINUTES if ttl is None else ttl
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise ActionError(f"core.ask: 'ttl' must be an integer of minutes, got {ttl!r}")
    return {"schema": schema, "roles": roles, "users": users, "route": route, "ttl": ttl}


def _names(value: Any, field: str) -> list[str]:
    value = [] if value is None else value
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ActionError(f"core.ask: {field!r} must be a list of names, got {value!r}")
    return list(value)


def check_schema(schema: Any) -> None:
    """ActionError naming the problem when `schema` is not a usable JSON schema."""
    if not isinstance(schema, Mapping):
        raise ActionError(
            f"core.ask: 'schema' must be a JSON schema object, got {type(schema).__name__}"
        )
    try:
        if len(json.dumps(schema, default=str)) > MAX_SCHEMA_BYTES:
            raise ActionError(f"core.ask: 'schema' is over {MAX_SCHEMA_BYTES:,} bytes")
        jsonschema.Draft4Validator.check_schema(to_json_schema(schema))
    except jsonschema.SchemaError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "(top)"
        raise ActionError(
            f"core.ask: 'schema' is not a valid JSON schema at {where}: {error.message}"
        ) from None
    except RecursionError:
        raise ActionError("core.ask: 'schema' nests too deep") from None


def validate_response(inquiry_id: str, schema: Mapping[str, Any], response: Any) -> None:
    """InquiryError naming what is wrong when `response` does not fit `schema` (what
    StackStorm's API answers 400 with)."""
    if not isinstance(response, dict):
        raise InquiryError(
            f'the response for inquiry "{inquiry_id}" must be a JSON object, '
            f"got {_json_type(response)}"
        )
    size = len(json.dumps(response))
    if size > MAX_RESPONSE_BYTES:
        raise InquiryError(
            f'the response for inquiry "{inquiry_id}" is {size:,} bytes, over the limit '
            f"of {MAX_RESPONSE_BYTES:,}"
        )
    error = jsonschema.exceptions.best_match(
        validator_for(to_json_schema(schema)).iter_errors(response)
    )
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path)
        at = f" at {where!r}" if where else ""
        raise InquiryError(
            f'Response for inquiry "{inquiry_id}" did not pass schema validation{at}: '
            f"{error.message}"
        )


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    return names.get(type(value), type(value).__name__)


def may_respond(asked_by: Mapping[str, Any], user: str | None, role: str | None) -> str | None:
    """Why `user` (with its `role`) may not respond, or None when it may. StackStorm: with
    `users` listed, only those; with `roles` listed, only a holder of one of them."""
    users: Sequence[str] = asked_by.get("users") or []
    roles: Sequence[str] = asked_by.get("roles") or []
    if users and user not in users:
        return f"only users {', '.join(map(repr, users))} may respond"
    if roles and role not in roles:
        return f"only roles {', '.join(map(repr, roles))} may respond"
    return None
