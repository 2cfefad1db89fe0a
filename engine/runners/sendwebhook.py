"""The ``sendwebhook`` runner (core.sendwebhook): a signed JSON POST through http-request.

The body is encoded once, signed with the `signing` parameter's scheme (the outbound
registry: standard-webhooks, hmac-sha256, rsa-sha256), and those exact bytes are sent by
the http-request runner, so the receiver verifies what it got. The message id is the
execution id, the same on a retried run, so receivers can drop a repeat. A bad signing
configuration fails the execution before anything is sent.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from engine.errors import ConfigError
from engine.outbound import signing
from engine.outbound.key_ring import KeyRing
from engine.runners.base import FAILED, DestinationGuard, RunRequest, RunResult, mask_secrets
from engine.runners.http_request import HttpRequestRunner

KeyRingSource = Callable[[], Awaitable[KeyRing]]
_SIGNING_KEYS = frozenset({"scheme", "secret", "options"})


class SendWebhookRunner:
    name = "sendwebhook"
    # `signing` ({scheme, secret, options}) is core.sendwebhook's own action parameter.
    parameters = HttpRequestRunner.parameters

    def __init__(
        self,
        destination_guard: DestinationGuard | None = None,
        connector_factory: Callable[[], aiohttp.BaseConnector] | None = None,
        keyring: KeyRingSource | None = None,
    ) -> None:
        self._http = HttpRequestRunner(destination_guard, connector_factory)
        # Only rsa-sha256 needs the engine's key ring; it is loaded on its first use.
        self._keyring = keyring

    async def run(self, request: RunRequest) -> RunResult:
        body = json.dumps(request.parameter("body")).encode()
        headers = {str(k): str(v) for k, v in (request.parameter("headers") or {}).items()}
        headers["Content-Type"] = "application/json"
        try:
            headers.update(await self._signature(request, body))
        except ConfigError as exc:
            return RunResult(
                FAILED, mask_secrets({"error": f"signing: {exc}"}, request.secret_values())
            )
        parameters = {
            **request.runner_parameters,
            "method": "POST",
            "headers": headers,
            # Sent as these exact bytes (the text is ASCII: json.dumps escapes the rest).
            "body": body.decode(),
        }
        parameters.pop("signing", None)
        return await self._http.run(dataclasses.replace(request, runner_parameters=parameters))

    async def _signature(self, request: RunRequest, body: bytes) -> dict[str, str]:
        config: Any = request.parameter("signing")
        if not config:
            return {}
        if not isinstance(config, dict) or set(config) - _SIGNING_KEYS:
            raise ConfigError("'signing' must be an object with scheme, secret and options")
        scheme = config.get("scheme") or signing.DEFAULT_SCHEME
        secret = config.get("secret")
        keyring = None
        if signing.get_scheme(scheme).needs_keyring and self._keyring is not None:
            keyring = await self._keyring()
        return signing.sign_headers(
            scheme,
            body=body,
            message_id=request.execution_id,
            timestamp=int(time.time()),
            secrets=[secret] if secret else [],
            options=config.get("options") or {},
            keyring=keyring,
        )
