"""Policies and policy types under /api/v1, in StackStorm's shapes (reads only).

`st2 policy list|get` and `st2 policy-type list|get` read these. Policies come from the
packs' ``policies/*.yaml`` (engine.packs.policies); they change with the packs, so
StackStorm's PUT and DELETE on a policy are not offered.
"""

from __future__ import annotations

from aiohttp import web

from engine.errors import NotFound
from engine.http.context import RUNTIME, json_response
from engine.http.paging import add_get_both_slashes
from engine.packs.action import stable_id
from engine.packs.policy_types import POLICY_TYPES, policy_type

# StackStorm's PolicyController.supported_filters.
POLICY_FILTERS = ("pack", "resource_ref", "policy_type")


def add_routes(app: web.Application) -> None:
    for path, handler in (
        ("/api/v1/policies", list_policies),
        ("/api/v1/policies/{ref_or_id}", get_policy),
        ("/api/v1/policytypes", list_policy_types),
        ("/api/v1/policytypes/{ref_or_id}", get_policy_type),
    ):
        add_get_both_slashes(app, path, handler)


async def list_policies(request: web.Request) -> web.Response:
    wanted = {name: request.query[name] for name in POLICY_FILTERS if name in request.query}
    policies = [
        policy.to_api()
        for policy in request.app[RUNTIME].packs.policies()
        if all(getattr(policy, name) == value for name, value in wanted.items())
    ]
    return json_response(policies)


async def get_policy(request: web.Request) -> web.Response:
    key = request.match_info["ref_or_id"]
    for policy in request.app[RUNTIME].packs.policies():
        if key in (policy.ref, stable_id(policy.uid)):
            return json_response(policy.to_api())
    raise NotFound(f"Resource with a reference or id {key!r} not found")


async def list_policy_types(request: web.Request) -> web.Response:
    resource_type = request.query.get("resource_type")
    types = [
        t.to_api()
        for t in sorted(POLICY_TYPES.values(), key=lambda t: (t.resource_type, t.name))
        if resource_type is None or t.resource_type == resource_type
    ]
    return json_response(types)


async def get_policy_type(request: web.Request) -> web.Response:
    key = request.match_info["ref_or_id"]
    found = policy_type(key)
    if found is None:
        raise NotFound(
            f"PolicyType with a reference of id {key!r} not found; known: {', '.join(POLICY_TYPES)}"
        )
    return json_response(found.to_api())
