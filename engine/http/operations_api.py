"""Operator endpoints: why a trigger instance did what it did, and reloading rules.

`GET /api/v1/triggerinstances/{id}/explain[?rule=REF]` — the explain report.
`POST /api/v1/reload` — reload rules, packs and webhook definitions (admin key).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from engine.http.auth import GATEKEEPER
from engine.http.context import RUNTIME, json_response
from engine.http.guard import guarded
from engine.process.reload import ReloadReport, reload_runtime, watch_files
from engine.rules.explain import explain

log = logging.getLogger(__name__)

# Enforcements one trigger instance can have: one per candidate rule.
_MAX_ENFORCEMENTS = 1000


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/triggerinstances/{id}/explain", guarded(explain_handler))
    app.router.add_post("/api/v1/reload", guarded(reload_handler))


def _gate(app: web.Application) -> Any:
    return app.get(GATEKEEPER)


def reload_app(app: web.Application) -> ReloadReport:
    """Reload what `app` serves (rules, packs, webhook definitions); never raises for files."""
    return reload_runtime(app[RUNTIME], _gate(app))


async def watch_app(app: web.Application, stop: asyncio.Event) -> None:
    await watch_files(app[RUNTIME], stop, _gate(app))


# Task runs of a workflow listed under the execution a rule requested.
_MAX_TASKS = 100


async def explain_handler(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    store = runtime.store
    instance = await store.get_trigger_instance(request.match_info["id"])
    records = await store.get_rule_evaluations(instance.id)
    page = await store.list_enforcements({"trigger_instance": instance.id}, _MAX_ENFORCEMENTS, 0)
    executions = {}
    for enforcement in page.items:
        if enforcement.execution_id:
            executions[enforcement.execution_id] = await store.get_execution(
                enforcement.execution_id
            )
    report = explain(
        instance,
        records,
        page.items,
        executions,
        runtime.ruleset,
        rule_ref=request.query.get("rule") or None,
    )
    for candidate in report.get("candidates", []):
        execution = candidate.get("execution")
        if execution is not None:
            # A workflow's task runs: what happened after the rule fired.
            children = await store.list_executions({"parent": execution["id"]}, _MAX_TASKS, 0)
            if children.items:
                execution["tasks"] = [
                    {
                        "task": _task_name(child.context or {}),
                        "id": child.id,
                        "action": child.action,
                        "status": child.status,
                    }
                    for child in sorted(children.items, key=lambda c: (c.created_at, c.id))
                ]
    return json_response(report)


def _task_name(context: dict) -> str | None:
    """A task run's name: an Orquesta task's, or an action chain's link."""
    if isinstance(context.get("chain"), dict):
        return context["chain"].get("name")
    return (context.get("orquesta") or {}).get("task_name")


async def reload_handler(request: web.Request) -> web.Response:
    gate = _gate(request.app)
    if gate is not None:
        await gate.require_key(request, admin=True)
    report = reload_app(request.app)
    return json_response(report.as_dict(), 200)
