"""`GET /api/v1/user`: who the caller is, in the shape `st2 whoami` reads.

StackStorm answers with the authenticated user, how they authenticated and their RBAC
roles. Here the user is the API key's name, the method is the API key and the roles are
the key's one role (engine.model.roles). With auth disabled every caller acts as the rule
user (engine.rules.enforce.RULE_USER) with admin rights, which is what the answer says.
"""

from __future__ import annotations

from aiohttp import web

from engine.http.auth import API_KEY, KEY_HEADER, KEY_QUERY
from engine.http.context import json_response
from engine.http.guard import guarded
from engine.model.roles import ADMIN
from engine.rules.enforce import RULE_USER


def add_routes(app: web.Application) -> None:
    for path in ("/api/v1/user", "/api/v1/user/"):
        app.router.add_get(path, guarded(whoami))


async def whoami(request: web.Request) -> web.Response:
    key = request.get(API_KEY)
    if key is None:
        return json_response(
            {
                "username": RULE_USER,
                "authentication": {"method": "none", "location": None},
                "rbac": {"enabled": False, "roles": [], "is_admin": True},
                "nickname": None,
            }
        )
    return json_response(
        {
            "username": key.name,
            "authentication": {"method": "api key", "location": _location(request)},
            "rbac": {"enabled": True, "roles": [key.role], "is_admin": key.role == ADMIN},
            "nickname": None,
            "api_key": {"id": key.id, "key_prefix": key.prefix},
        }
    )


def _location(request: web.Request) -> str:
    """Where the key came from, in StackStorm's words (St2-Api-Key or Authorization)."""
    if request.query.get(KEY_QUERY) and not request.headers.get(KEY_HEADER):
        return "query"
    return "header"
