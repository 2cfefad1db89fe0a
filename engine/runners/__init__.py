"""Runners by name: what executes one action run (shell, script, Python, HTTP, noop).

``get_runner(name)`` fails early for an unknown runner type, so a pack naming one is
rejected when it loads rather than when a rule fires. A :class:`RunnerRegistry` can also be
built explicitly, e.g. with an http-request runner that carries a destination guard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import RegistryError, RunnerError
from engine.runners.base import DestinationGuard, Runner, RunRequest, RunResult
from engine.runners.shell import quote_for_shell

__all__ = [
    "RunRequest",
    "RunResult",
    "Runner",
    "RunnerRegistry",
    "default_runners",
    "get_runner",
    "quote_for_shell",
    "register",
    "runner_names",
]


class RunnerRegistry:
    def __init__(self) -> None:
        self._runners: dict[str, Runner] = {}

    def register(self, runner: Runner) -> None:
        name = getattr(runner, "name", None)
        if not isinstance(name, str) or not name:
            raise RegistryError(f"runner {runner!r} has no name")
        if name in self._runners:
            raise RegistryError(f"a runner named {name!r} is already registered")
        for parameter, schema in getattr(runner, "parameters", {}).items():
            # The st2 CLI reads every runner parameter's type.
            if "type" not in schema:
                raise RegistryError(f"runner {name!r}: parameter {parameter!r} has no 'type'")
        self._runners[name] = runner

    def get(self, name: str) -> Runner:
        try:
            return self._runners[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise RunnerError(f"unknown runner type {name!r}; known runners: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._runners)


def default_runners(
    destination_guard: DestinationGuard | None = None,
    http_connector_factory: Callable[[], Any] | None = None,
    keyring: Callable[[], Any] | None = None,
) -> RunnerRegistry:
    """A registry of the built-in runners.

    ``destination_guard`` checks every URL http-request is about to request, and
    ``http_connector_factory`` builds its aiohttp connector for each run; with the SSRF
    guard: ``default_runners(guard.check_url, guard.connector)``. ``keyring`` (an async
    callable returning the engine's RSA key ring) lets sendwebhook sign with rsa-sha256.
    """
    # Imported here so that the python-script child, which imports this package on its
    # way to engine.runners.python_host, does not pay for aiohttp on every start.
    from engine.runners.action_chain import ActionChainRunner
    from engine.runners.dispatch import AnnouncementRunner, InjectTriggerRunner
    from engine.runners.http_request import HttpRequestRunner
    from engine.runners.inquirer import InquirerRunner
    from engine.runners.noop import NoopRunner
    from engine.runners.orquesta import OrquestaRunner
    from engine.runners.python_script import PythonScriptRunner
    from engine.runners.sendwebhook import SendWebhookRunner
    from engine.runners.shell import LocalShellCommandRunner, LocalShellScriptRunner

    registry = RunnerRegistry()
    for runner in (
        LocalShellCommandRunner(),
        LocalShellScriptRunner(),
        PythonScriptRunner(),
        HttpRequestRunner(destination_guard, http_connector_factory),
        SendWebhookRunner(destination_guard, http_connector_factory, keyring),
        NoopRunner(),
        OrquestaRunner(),
        ActionChainRunner(),
        InjectTriggerRunner(),
        AnnouncementRunner(),
        InquirerRunner(),
    ):
        registry.register(runner)
    return registry


_default_registry: RunnerRegistry | None = None


def _registry() -> RunnerRegistry:
    global _default_registry
    if _default_registry is None:
        _default_registry = default_runners()
    return _default_registry


def get_runner(name: str) -> Runner:
    """The registered runner called ``name``; RunnerError naming the known ones otherwise."""
    return _registry().get(name)


def runner_names() -> list[str]:
    return _registry().names()


def register(runner: Runner) -> None:
    """Add a runner to the default registry; RegistryError if its name is taken."""
    _registry().register(runner)
