"""One delivery attempt: build the envelope, sign it, POST it through the SSRF guard.

Success is a 2xx within the timeout; a 3xx (redirects are not followed), 4xx, 5xx, a
timeout, a refused destination or a connection error is a failed attempt, recorded with
what happened. aiohttp exceptions never leave this module.

The RSA key ring is loaded (or generated, which takes a moment) on first use only, in a
thread, so a process whose subscriptions never use rsa-sha256 never touches it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from pathlib import Path

import aiohttp

from engine.config import Settings
from engine.errors import ConfigError, EngineError
from engine.model.records import isoformat, utcnow
from engine.outbound import signing
from engine.outbound.delivery import AttemptResult, ClaimedDelivery
from engine.outbound.events import envelope
from engine.outbound.key_ring import KeyRing
from engine.outbound.ssrf import DestinationGuard

log = logging.getLogger(__name__)

USER_AGENT = "Hookyard-Webhooks"
_READ_CHUNK = 16384


class KeyRingProvider:
    """The engine's RSA key ring from outbound settings, loaded once on first use.

    Either a configured PEM (`outbound.signing_key_pem`) or a generated ring kept in
    `outbound.keyring_dir`. A ring shared by several processes is re-read from disk at most
    every RELOAD_SECONDS, so a rotation made by one process (or the CLI) reaches the others.
    """

    RELOAD_SECONDS = 5.0

    def __init__(self, settings: Settings) -> None:
        outbound = settings.outbound
        self.directory: Path = settings.resolve_path(outbound.keyring_dir)
        self.pem_file: Path | None = (
            settings.resolve_path(outbound.signing_key_pem) if outbound.signing_key_pem else None
        )
        passphrase = outbound.keyring_passphrase
        self._passphrase = None if passphrase is None else str(passphrase).encode()
        self._grace = outbound.key_rotation_grace
        self._ring: KeyRing | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    def load(self) -> KeyRing:
        """Load synchronously (CLI use); raises ConfigError for a bad PEM or passphrase."""
        if self.pem_file is not None:
            try:
                pem = self.pem_file.read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"outbound.signing_key_pem: cannot read {self.pem_file}: {exc.strerror}"
                ) from None
            return KeyRing.from_pem(pem, self._passphrase, grace_seconds=self._grace)
        return KeyRing.load_or_create(
            self.directory, passphrase=self._passphrase, grace_seconds=self._grace
        )

    async def get(self) -> KeyRing:
        async with self._lock:
            now = time.monotonic()
            if self._ring is None:
                self._ring = await asyncio.to_thread(self.load)
                self._loaded_at = now
            elif self.pem_file is None and now - self._loaded_at > self.RELOAD_SECONDS:
                await asyncio.to_thread(self._ring.reload)
                self._loaded_at = now
            return self._ring

    async def jwks(self) -> dict:
        ring = await self.get()
        # Another process sharing the directory may have rotated: publish what is on disk.
        await asyncio.to_thread(ring.reload)
        return ring.jwks()

    async def rotate(self) -> str:
        """A new current signing key; the old public key stays in the JWKS for the grace."""
        ring = await self.get()
        async with self._lock:
            return await asyncio.to_thread(ring.rotate)


def body_of(claimed: ClaimedDelivery) -> bytes:
    delivery = claimed.delivery
    return envelope(
        delivery.event_id,
        isoformat(claimed.event_ts) or "",
        delivery.event_type,
        delivery.sequence,
        claimed.event_data,
    )


class Sender:
    def __init__(
        self,
        guard: DestinationGuard,
        keyrings: KeyRingProvider,
        timeout: float,
        excerpt_bytes: int,
    ) -> None:
        self._guard = guard
        self._keyrings = keyrings
        self._timeout = timeout
        self._excerpt_bytes = excerpt_bytes
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:
        # One session and connector for the worker: connections to a receiver are reused,
        # and the guard's connector re-checks every address it connects to.
        self._session = aiohttp.ClientSession(connector=self._guard.connector())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, claimed: ClaimedDelivery) -> AttemptResult:
        started = utcnow()
        clock = time.monotonic()
        try:
            headers, body = await self._request_parts(claimed, started)
            destination = await self._guard.check_url(claimed.subscription.url)
            assert self._session is not None, "use Sender as an async context manager"
            async with asyncio.timeout(self._timeout):
                async with self._session.post(
                    destination.url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    excerpt = await self._excerpt(response)
                    status = response.status
        except TimeoutError:
            return self._failed(started, clock, f"no response within {self._timeout:g} s")
        except EngineError as exc:  # DestinationRefused, HostNotResolved, bad signing config
            return self._failed(started, clock, str(exc))
        except aiohttp.ClientError as exc:
            return self._failed(started, clock, _describe(exc))
        except ValueError as exc:  # aiohttp's answer to a malformed URL or header
            return self._failed(started, clock, f"invalid request: {exc}")
        elapsed = round((time.monotonic() - clock) * 1000, 1)
        error = None if 200 <= status < 300 else _status_error(status)
        return AttemptResult(started, status, error, elapsed, excerpt)

    async def _request_parts(
        self, claimed: ClaimedDelivery, now: datetime
    ) -> tuple[dict[str, str], bytes]:
        subscription = claimed.subscription
        body = body_of(claimed)
        keyring = None
        if signing.get_scheme(subscription.signing_scheme).needs_keyring:
            keyring = await self._keyrings.get()
        signature = signing.sign_headers(
            subscription.signing_scheme,
            body=body,
            message_id=claimed.delivery.event_id,
            timestamp=int(now.timestamp()),
            secrets=subscription.signing_secrets(now),
            options=subscription.signing_options,
            keyring=keyring,
        )
        headers = {
            **subscription.custom_headers,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **signature,
        }
        return headers, body

    async def _excerpt(self, response: aiohttp.ClientResponse) -> str:
        raw = bytearray()
        while len(raw) < self._excerpt_bytes:
            chunk = await response.content.read(_READ_CHUNK)
            if not chunk:
                break
            raw += chunk
        return bytes(raw[: self._excerpt_bytes]).decode("utf-8", errors="replace")

    def _failed(self, started: datetime, clock: float, error: str) -> AttemptResult:
        elapsed = round((time.monotonic() - clock) * 1000, 1)
        return AttemptResult(started, None, error, elapsed, None)


def _status_error(status: int) -> str:
    if 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed; subscribe the final URL"
    return f"HTTP {status}"


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
    return f"{type(exc).__name__}: {exc}"
