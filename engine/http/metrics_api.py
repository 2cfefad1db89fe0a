"""`GET /metrics` on the app, and the hook label webhook requests are counted under.

The counters themselves are `engine.support.metrics.Metrics`; this module wires one into an app.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine.http.auth import GATEKEEPER
from engine.http.context import METRICS, RUNTIME
from engine.http.guard import guarded
from engine.support.metrics import UNKNOWN_WEBHOOK, Metrics

# The hook a webhook request was resolved to, set by the ingest handler; requests that
# fail before (unknown hook) are labelled from their path.
WEBHOOK_LABEL = web.RequestKey("webhook_label", str)
WEBHOOK_PREFIXES = ("/webhooks/", "/api/v1/webhooks/")


def install(app: web.Application) -> Metrics:
    """Add /metrics and the observers to `app`."""
    metrics = Metrics()
    runtime = app[RUNTIME]
    app[METRICS] = metrics
    runtime.observers.append(metrics.observe)
    runtime.store.add_commit_observer(metrics.commit)
    app.router.add_get("/metrics", guarded(_metrics_handler))
    return metrics


async def _metrics_handler(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    body = await metrics.render(request.app[RUNTIME].store)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def hook_label(request: web.Request) -> str:
    """The defined hook a path names (never a key placed in the path), else <unknown>."""
    path = request.path
    prefix = next(p for p in WEBHOOK_PREFIXES if path.startswith(p))
    name = path[len(prefix) :].strip("/")
    hooks = request.app[RUNTIME].ruleset.webhooks
    gate = request.app.get(GATEKEEPER)
    definitions = gate.definitions if gate is not None else {}
    # Checked in place first: copying every hook name per request cost more than counting.
    if name == "st2" or name in hooks or name in definitions:
        return name
    known = {*hooks, *definitions}
    candidates = [k for k in known if name.startswith(k + "/")]
    return max(candidates, key=len) if candidates else UNKNOWN_WEBHOOK
