"""Action parameters whose templates need more than plain rendering, by runner type.

A shell command (`cmd` of local-shell-cmd) quotes every inserted value for the shell; a
URL (`url` of http-request and sendwebhook) percent-encodes every inserted value for its
URL component (engine.rules.url_quoting). Everything else renders as a plain template.
Both the rules worker (rule parameters) and the actions worker (templates in action
metadata defaults) ask this one registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from engine.rules import templates, url_quoting

__all__ = [
    "SHELL_COMMAND",
    "URL",
    "kinds_for_runner",
    "render_parameter",
    "shell_command_parameters",
]

SHELL_COMMAND = "shell-command"
URL = "url"

# Each renderer takes (source, context, parameter name): errors name the parameter.
_RENDERERS: Mapping[str, Callable[[str, Mapping[str, Any], str | None], Any]] = MappingProxyType(
    {
        SHELL_COMMAND: templates.render_shell_command,
        URL: lambda source, context, _parameter: url_quoting.render_url(source, context),
    }
)

_BY_RUNNER: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "local-shell-cmd": MappingProxyType({"cmd": SHELL_COMMAND}),
        "http-request": MappingProxyType({"url": URL}),
        "sendwebhook": MappingProxyType({"url": URL}),
    }
)
_NONE: Mapping[str, str] = MappingProxyType({})


def kinds_for_runner(runner_type: str | None) -> Mapping[str, str]:
    """Parameter name -> kind, for the parameters of this runner type that have one."""
    return _BY_RUNNER.get(runner_type or "", _NONE)


def shell_command_parameters(kinds: Mapping[str, str]) -> frozenset[str]:
    """The names among `kinds` (from kinds_for_runner) that are shell commands."""
    return frozenset(name for name, kind in kinds.items() if kind == SHELL_COMMAND)


def render_parameter(
    kind: str | None, value: Any, context: Mapping[str, Any], name: str | None = None
) -> Any:
    """Render one parameter value: a str of a known kind its own way, anything else plainly."""
    if kind is not None and isinstance(value, str):
        return _RENDERERS[kind](value, context, name)
    return templates.render_value(value, context)
