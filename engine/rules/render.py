"""Render a matched rule's action parameters against the trigger payload.

Values that are exactly one `{{ expr }}` keep their native type (list, dict, int, bool).
Payload values are data: they are inserted, never rendered again as templates.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from engine.rules import parameter_kinds as kinds
from engine.rules import regexes
from engine.rules.rule import Rule


def action_context_for(
    rule: Rule, trigger_instance_id: str | None = None, user: str | None = None
) -> dict[str, Any]:
    """What `action_context` holds in templates, and what an execution's context records."""
    context: dict[str, Any] = {"rule": {"ref": rule.ref, "name": rule.name, "pack": rule.pack}}
    if trigger_instance_id is not None:
        context["trigger_instance"] = {"id": trigger_instance_id}
    if user is not None:
        context["user"] = user
    return context


def render_parameters(
    rule: Rule,
    payload: Any,
    *,
    kv: Any = None,
    action_context: Mapping[str, Any] | None = None,
    parameter_kinds: Mapping[str, str] = MappingProxyType({}),
) -> dict[str, Any]:
    """The rule's action parameters rendered for this payload; raises TemplateError.

    `parameter_kinds` (engine.rules.parameter_kinds) names the parameters that render their
    own way: a shell command (the `cmd` of a shell-command action) with every inserted value
    shell-quoted (a value where the shell context is unknown — $(...), a here-document,
    sh -c... — raises ShellContextError naming the parameter), a URL with every inserted
    value percent-encoded for its URL component, so payload data cannot inject commands or
    move a request; authors opt out per value with `{{ value | unquoted }}`.
    """
    context = {
        "trigger": payload,
        "rule": {"ref": rule.ref, "name": rule.name, "pack": rule.pack},
        "action_context": dict(action_context or action_context_for(rule)),
        "st2kv": kv,
    }
    rendered = {}
    with regexes.budget():  # the regex_* filters of all parameters share one budget
        for name, value in (rule.action_parameters or {}).items():
            rendered[name] = kinds.render_parameter(parameter_kinds.get(name), value, context, name)
    return rendered
