"""What route modules share: the app keys and the JSON response helpers.

Routes import these from here, never from `engine.http.app`: the app factory imports
every route module, so a route importing the factory made an import cycle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

from aiohttp import web

from engine.errors import (
    AuthError,
    EngineError,
    IngestError,
    NotFound,
    StoreBusy,
    StoreError,
)
from engine.process.runtime import Runtime
from engine.store import UnstorableValue

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", Runtime)
# The app's engine.support.metrics.Metrics (engine.http.metrics_api installs it).
METRICS = web.AppKey("metrics", object)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A store error's own text names database files, hosts and driver details: it is logged,
# and the client gets only these.
STORE_BUSY = "the store is busy; retry later"
STORE_UNAVAILABLE = "the store is unavailable; retry later"


class BacklogFull(StoreBusy):
    """Raised when ingest sheds load: too many trigger instances wait to be processed."""


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None):
    return web.Response(
        body=json.dumps(data, default=_json_default).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(message: str, status: int, headers: dict[str, str] | None = None):
    # `faultstring` is what StackStorm's API and the st2 CLI use for error messages.
    return json_response({"faultstring": message}, status, headers)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def error_response_for(request: web.Request, exc: Exception) -> web.Response | None:
    """The JSON error answer for `exc`, or None for what is not an error answer (a
    redirect, a bug: re-raised by the caller)."""
    if isinstance(exc, IngestError):
        if isinstance(exc, AuthError) and exc.status == 401:
            return error_response(str(exc), 401, {"WWW-Authenticate": exc.challenge})
        retry = getattr(exc, "retry_after", None)  # a rate limit's 429 says when to come back
        return error_response(str(exc), exc.status, {"Retry-After": str(retry)} if retry else None)
    if isinstance(exc, NotFound):
        return error_response(str(exc), 404)
    if isinstance(exc, UnstorableValue):
        return error_response(f"the body cannot be stored: {exc}", 400)
    if isinstance(exc, BacklogFull):  # about the engine's queue, not the database: said as is
        retry = max(1, round(exc.retry_after))
        return error_response(f"{exc}; retry later", 503, {"Retry-After": str(retry)})
    if isinstance(exc, StoreBusy):
        log.warning("store busy on %s %s: %s", request.method, request.path, exc)
        retry = max(1, round(exc.retry_after))
        return error_response(STORE_BUSY, 503, {"Retry-After": str(retry)})
    if isinstance(exc, StoreError):
        log.error("store error on %s %s: %s", request.method, request.path, exc)
        retry = request.app[RUNTIME].settings.ingest.retry_after
        return error_response(STORE_UNAVAILABLE, 503, {"Retry-After": str(retry)})
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        return error_response(f"{message}: {request.method} {request.path}", exc.status)
    if isinstance(exc, EngineError):
        return error_response(str(exc), 400)
    return None
