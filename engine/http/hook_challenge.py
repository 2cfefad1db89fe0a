"""A hook's answers before any ingest: a method it does not accept, and a sender's
endpoint check (challenge).

Senders check an endpoint before sending events to it: Meta sends
`GET ?hub.mode=subscribe&hub.challenge=<n>&hub.verify_token=<token>`, Microsoft Graph a
POST with `?validationToken=<token>`; each wants the value echoed as plain text. Neither
request is signed (there is no body to sign, and the sender's secret is not in use yet),
so a challenge is answered before the hook's credential check. It stores nothing and fires
nothing; a hook that sets `verify_token` answers only a challenge carrying the token the
sender was configured with. Every other request to the hook needs its credential as usual.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from engine.errors import IngestError
from engine.http.context import error_response
from engine.http.hookdefs import Challenge

# Longest value echoed (Graph's tokens are a few hundred characters).
MAX_CHALLENGE_CHARS = 4096


def method_not_allowed(request: web.Request, methods: tuple[str, ...]) -> web.Response:
    """405 in JSON, with `Allow` listing what the hook accepts."""
    return error_response(
        f"Method Not Allowed: {request.method} {request.path}; this hook accepts "
        f"{', '.join(methods)}",
        405,
        {"Allow": ",".join(methods)},
    )


def answer_challenge(request: web.Request, challenge: Challenge) -> web.Response:
    """200 with the challenge value as text; 403 when the verify token does not match,
    400 for a value that is not plain text of a sane length."""
    if challenge.verify_query is not None:
        sent = request.query.get(challenge.verify_query, "")
        expected = challenge.verify_token or ""
        if not hmac.compare_digest(
            sent.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
        ):
            raise IngestError(
                f"the challenge's {challenge.verify_query} does not match this hook's verify_token",
                403,
            )
    value = request.query.get(challenge.query, "")
    if not value or len(value) > MAX_CHALLENGE_CHARS or not value.isprintable():
        raise IngestError(
            f"the {challenge.query} query parameter must be 1 to {MAX_CHALLENGE_CHARS} "
            "printable characters",
            400,
        )
    return web.Response(
        text=value,
        content_type="text/plain",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
    )
