"""Settings for an app under test and a test client around it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from engine.config import AuthSettings, OutboundSettings, Settings, StoreSettings, WorkerSettings
from engine.http.app import create_app
from tests.support.packs import write_rules

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_PACKS = REPO_ROOT / "packs"
# Workers poll often so tests do not wait on the 0.5 s default (only worker roles poll).
FAST_POLL = 0.05
LOOPBACK = ("127.0.0.1/32",)


def settings_for(
    tmp_path: Path,
    *,
    rules: Mapping[str, str] | None = None,
    packs: Sequence[str | Path] = (),
    roles: Sequence[str] = ("api",),
    auth: bool = False,
    **fields: Any,
) -> Settings:
    """Settings of an app living in tmp_path: its SQLite file there, auth off unless asked,
    workers polling fast, only the packs given (the built-in core pack is always there).

    `rules` maps file stems to rule YAML, written into tmp_path/rules (the one rules
    folder); without it there is none. Any other Settings field passes through `fields`
    and wins over these defaults (a test's own `store`, `workers`, `rules_dirs`...).
    """
    rules_dirs: tuple[str, ...] = ()
    if rules is not None:
        rules_dirs = (str(write_rules(tmp_path / "rules", rules)),)
    defaults: dict[str, Any] = {
        "store": StoreSettings(url=f"sqlite:///{tmp_path}/hookyard.db"),
        "workers": WorkerSettings(poll_interval=FAST_POLL),
        "auth": AuthSettings(enabled=auth),
        "rules_dirs": rules_dirs,
        "packs_dirs": tuple(str(p) for p in packs),
        "roles": tuple(roles),
        "base_dir": str(tmp_path),
    }
    return Settings(**{**defaults, **fields})


def quick_outbound(tmp_path: Path, **changes: Any) -> OutboundSettings:
    """Outbound settings for tests with receivers on loopback: loopback allowed, retries
    0.2 s apart without jitter, a 0.5 s delivery timeout, the key ring in tmp_path."""
    defaults: dict[str, Any] = {
        "allow_private": LOOPBACK,
        "retry_schedule": ("0s", "0.2s", "0.2s"),
        "retry_jitter": 0.0,
        "delivery_timeout": 0.5,
        "keyring_dir": str(tmp_path / "keys"),
    }
    return OutboundSettings(**{**defaults, **changes})


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[TestClient]:
    """A test client on a real loopback server running the app (started and stopped)."""
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client
