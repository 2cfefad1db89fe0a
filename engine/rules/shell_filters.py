"""Shell command templates: every value a {{ }} inserts is quoted for where it lands.

For a local-shell-cmd `cmd`, `quote_shell_sites` pipes each {{ }} through the filter of
its shell context (engine.rules.shell_quoting finds it: a word, inside "...", inside
'...'), or through one that refuses any value where the context is unknown or unsafe,
unless the author writes `{{ value | unquoted }}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jinja2 import nodes

from engine.errors import ShellContextError
from engine.rules import shell_quoting
from engine.rules.filters import json_dumps
from engine.rules.shell_quoting import Unquoted
from engine.rules.template_sandbox import require_data

__all__ = ["SHELL_FILTERS", "quote_shell_sites", "unquoted"]


def unquoted(value: Any) -> Unquoted:
    """The `unquoted` filter: the value goes into the command as it is."""
    return Unquoted("" if value is None else value)


def _shell_text(value: Any) -> str:
    value = require_data(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return json_dumps(value)
    return str(value)


def _shell_word(value: Any) -> str:
    if isinstance(value, Unquoted):
        return str(value)
    return shell_quoting.quote_word(_shell_text(value))


def _shell_in_double_quotes(value: Any) -> str:
    if isinstance(value, Unquoted):
        return str(value)
    return shell_quoting.quote_in_double_quotes(_shell_text(value))


def _shell_in_single_quotes(value: Any) -> str:
    if isinstance(value, Unquoted):
        return str(value)
    return shell_quoting.quote_in_single_quotes(_shell_text(value))


def _shell_refused(value: Any, problem: str) -> str:
    """A value where its shell context is unknown or unsafe: only `| unquoted` passes."""
    if isinstance(value, Unquoted):
        return str(value)
    raise ShellContextError(problem)


SHELL_FILTERS: dict[str | None, Callable[..., str]] = {
    shell_quoting.WORD: _shell_word,
    shell_quoting.DOUBLE: _shell_in_double_quotes,
    shell_quoting.SINGLE: _shell_in_single_quotes,
    None: _shell_refused,
}


def quote_shell_sites(environment: Any, source: str, tree: nodes.Template) -> tuple[str, ...]:
    """Pipe each {{ }} of a shell command through its quoting filter; return the problems.

    A problem is a site where a value would land in an unknown or unsafe shell context
    (see shell_quoting): its filter refuses any value not marked `| unquoted`.
    """
    sites = shell_quoting.plan_sites(tree, environment.lexer.tokeniter(source, None))
    problems = []
    for site in sites:
        arguments: list[nodes.Expr] = []
        opted_out = isinstance(site.node, nodes.Filter) and site.node.name == "unquoted"
        if site.quoting is None and not opted_out:
            problem = (
                f"{site.description()}, where a value cannot be quoted safely; "
                f"{shell_quoting.env_advice(site)}"
            )
            problems.append(problem)
            arguments.append(nodes.Const(problem, lineno=site.line))
        elif site.quoting is None:
            arguments.append(nodes.Const("", lineno=site.line))
        name = SHELL_FILTERS[site.quoting].__name__
        site.output.nodes[site.index] = nodes.Filter(
            site.node, name, arguments, [], None, None, lineno=site.line
        )
    return tuple(problems)
