"""Rules under /api/v1/rules in StackStorm's shapes: list, get, create, replace, delete.

`GET /api/v1/rules[/{ref}]` shows the rules this process has loaded (from files and
stored through the API). `POST /api/v1/rules` stores a new rule,
`PUT /api/v1/rules/{ref}` replaces one (a body of only `{"enabled": ...}` just enables or
disables it), `DELETE /api/v1/rules/{ref}` removes one. Each write needs an admin API
key. Stored rules are shared by every process on the store and survive restarts
(engine.workers.rule_sync).

Rules from files and packs stay owned by their files: PUT and DELETE on them answer 409
naming the file to edit (and reload), so the file on disk is never contradicted by a
database row. A new rule whose ref a file already defines is refused the same way.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from engine.errors import Conflict, IngestError, NotFound, RuleLoadError, RuleLoadErrors
from engine.http.api_json import read_json
from engine.http.auth import GATEKEEPER
from engine.http.context import RUNTIME, json_response
from engine.http.guard import guarded
from engine.http.paging import add_get_both_slashes, paging
from engine.process.runtime import Runtime
from engine.rules import Rule
from engine.rules.rule import is_rule_id
from engine.rules.stored import (
    build_api_rule,
    is_api_rule,
    loaded_rule,
    normalize_definition,
    shown_ref,
    stored_ref,
)
from engine.workers.rule_sync import RULE_SYNC


def add_routes(app: web.Application) -> None:
    add_get_both_slashes(app, "/api/v1/rules", list_rules)
    add_get_both_slashes(app, "/api/v1/rules/{ref}", get_rule)
    app.router.add_post("/api/v1/rules", guarded(create_rule))
    app.router.add_post("/api/v1/rules/", guarded(create_rule))
    app.router.add_put("/api/v1/rules/{ref}", guarded(update_rule))
    app.router.add_delete("/api/v1/rules/{ref}", guarded(delete_rule))


async def list_rules(request: web.Request) -> web.Response:
    rules = [rule.to_api() for rule in request.app[RUNTIME].ruleset]
    query = request.query
    if query.get("pack"):
        rules = [r for r in rules if r["pack"] == query["pack"]]
    if query.get("enabled") is not None:
        wanted = query["enabled"].lower() in ("true", "1")
        rules = [r for r in rules if r["enabled"] == wanted]
    if query.get("trigger"):
        rules = [r for r in rules if r["trigger"]["type"] == query["trigger"]]
    if query.get("action"):
        rules = [r for r in rules if r["action"]["ref"] == query["action"]]
    limit, offset = paging(query)
    return json_response(rules[offset : offset + limit], headers={"X-Total-Count": str(len(rules))})


async def get_rule(request: web.Request) -> web.Response:
    ref = request.match_info["ref"]
    rule = loaded_rule(request.app[RUNTIME].ruleset, ref)
    if rule is None:
        raise NotFound(f"no rule {ref!r}")
    return json_response(rule.to_api())


async def create_rule(request: web.Request) -> web.Response:
    await request.app[GATEKEEPER].require_key(request, admin=True)
    runtime = request.app[RUNTIME]
    definition = normalize_definition(await _json_object(request))
    rule = _build(runtime, definition)
    _refuse_file_rule(runtime, rule.ref, "a rule with this ref")
    try:
        await runtime.store.create_rule(rule.ref, definition)
    except Conflict as exc:
        raise IngestError(str(exc), 409) from None
    await request.app[RULE_SYNC].refresh()
    return json_response(rule.to_api(), 201)


async def update_rule(request: web.Request) -> web.Response:
    await request.app[GATEKEEPER].require_key(request, admin=True)
    runtime = request.app[RUNTIME]
    ref = await _ref_of(runtime, request.match_info["ref"])
    _refuse_file_rule(runtime, ref, "this rule")
    body = await _json_object(request)
    if set(body) == {"enabled"}:
        stored = {record.ref: record for record in await runtime.store.list_rules()}
        if ref not in stored:
            raise NotFound(f"no rule {shown_ref(ref)!r}")
        body = {**stored[ref].definition, "enabled": body["enabled"]}
    definition = normalize_definition(body)
    rule = _build(runtime, definition)
    if rule.ref != ref:
        raise IngestError(
            f"the body names rule {rule.ref!r} but the URL names {ref!r}; a rule's pack and "
            "name cannot change: create the new rule, then delete the old one"
        )
    await runtime.store.replace_rule(ref, definition)
    await request.app[RULE_SYNC].refresh()
    return json_response(rule.to_api())


async def delete_rule(request: web.Request) -> web.Response:
    await request.app[GATEKEEPER].require_key(request, admin=True)
    runtime = request.app[RUNTIME]
    ref = await _ref_of(runtime, request.match_info["ref"])
    _refuse_file_rule(runtime, ref, "this rule")
    await runtime.store.delete_rule(ref)
    await request.app[RULE_SYNC].refresh()
    return web.Response(status=204)


async def _ref_of(runtime: Runtime, ref_or_id: str) -> str:
    """The ref a URL names by ref or by id (StackStorm's `{ref_or_id}`). A loaded rule is
    found by either; a stored rule that does not load (a name over the limit) by its id."""
    loaded = loaded_rule(runtime.ruleset, ref_or_id)
    if loaded is not None:
        return loaded.ref
    if is_rule_id(ref_or_id):
        found = stored_ref(await runtime.store.list_rules(), ref_or_id)
        if found is not None:
            return found
    return ref_or_id


def _build(runtime: Runtime, definition: dict[str, Any]) -> Rule:
    try:
        rule = build_api_rule(definition, runtime.packs.trigger_parameter_schemas())
    except RuleLoadError as exc:
        each = exc.errors if isinstance(exc, RuleLoadErrors) else [exc]
        problems = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in each)
        raise IngestError(f"invalid rule: {problems}") from None
    if not runtime.action_known(rule.action_ref):
        raise IngestError(
            f"invalid rule: action.ref: no action {rule.action_ref!r} is installed"
            " (see GET /api/v1/actions)"
        )
    return rule


def _refuse_file_rule(runtime: Runtime, ref: str, what: str) -> None:
    existing = runtime.ruleset.get(ref)
    if existing is not None and not is_api_rule(existing):
        where = existing.source or "a rules directory"
        if existing.line:
            where = f"{where}:{existing.line}"
        raise IngestError(
            f"{what} ({ref}) is defined in {where}; rules from files are changed by editing "
            "the file and reloading (SIGHUP, POST /api/v1/reload or serve --watch)",
            409,
        )


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await read_json(request)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IngestError("the request body must be a JSON object (a rule)") from None
    if not isinstance(body, dict):
        raise IngestError("the request body must be a JSON object (a rule)")
    return body
