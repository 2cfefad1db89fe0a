"""Render a matched rule's action parameters against the trigger payload.

Values that are exactly one `{{ expr }}` keep their native type (list, dict, int, bool).
Payload values are data: they are inserted, never rendered again as templates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.rules import regexes, templates
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
    shell_parameters: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The rule's action parameters rendered for this payload; raises TemplateError.

    Parameters named in `shell_parameters` (the `cmd` of a shell-command action) are
    rendered with every inserted value shell-quoted, so payload data cannot inject
    commands; a value where the shell context is unknown ($(...), a here-document,
    sh -c...) raises ShellContextError naming the parameter. Authors opt out per value
    with `{{ value | unquoted }}`.
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
            if name in shell_parameters and isinstance(value, str):
                rendered[name] = templates.render_shell_command(value, context, name)
            else:
                rendered[name] = templates.render_value(value, context)
    return rendered
