"""Workflow expressions: ``<% yaql %>`` and ``{{ jinja }}`` inside strings and structures.

`evaluate(value, scope)` renders every string of a value (mapping keys too, as Orquesta
does): a string that is exactly one expression becomes the expression's value (a list
stays a list); a string with text around its expressions renders to a str. A string with
``<% %>`` is YAQL; otherwise ``{{ }}``/``{% %}`` make it Jinja, rendered in the rule
templates' sandbox (engine.rules.templates) with Orquesta's functions added.

Values are data: what an expression returns, or reads from the context, is never
evaluated again, so a ``"<% ... %>"`` a sender placed in a result stays that text.
Every failure is a `WorkflowExpressionError` quoting the expression.

`expression_problems` and `ctx_names_read` are the static checks of ``workflow inspect``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

from engine.errors import TemplateError, WorkflowExpressionError
from engine.rules import parameter_kinds, templates
from engine.workflows.context import CONTEXT_FUNCTIONS, NO_ITEM, ExpressionContext
from engine.workflows.functions import DATA_FUNCTIONS, NONE_MARKER, sized
from engine.workflows.yaql_engine import compile_yaql, evaluate_yaql

__all__ = [
    "NO_ITEM",
    "ExpressionContext",
    "ctx_names_read",
    "evaluate",
    "expression_problems",
    "has_expressions",
]

_YAQL = re.compile(r"<%(.*?)%>", re.DOTALL)
_JINJA_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
# The names read through ctx: ctx(x), ctx('x'), ctx("x"), ctx().x, ctx()['x'] / ["x"].
_CTX_READS = (
    re.compile(r"\bctx\(\s*([A-Za-z_][\w-]*)\s*\)"),
    re.compile(r"\bctx\(\s*'([^']+)'\s*\)"),
    re.compile(r'\bctx\(\s*"([^"]+)"\s*\)'),
    re.compile(r"\bctx\(\s*\)\.([A-Za-z_]\w*)\b(?!\s*\()"),
    re.compile(r"\bctx\(\s*\)\s*\[\s*'([^']+)'\s*\]"),
    re.compile(r'\bctx\(\s*\)\s*\[\s*"([^"]+)"\s*\]'),
)

# Orquesta registers its whole catalog as Jinja filters too (``x | to_json_string``).
_JINJA_FUNCTIONS = {name: sized(function) for name, function in DATA_FUNCTIONS.items()}
_SANDBOX = templates.sandbox_with_filters(_JINJA_FUNCTIONS)


def has_expressions(text: str) -> bool:
    return "<%" in text or templates.is_template(text)


def evaluate(value: Any, scope: ExpressionContext) -> Any:
    """`value` with every expression in it evaluated in `scope` (new containers)."""
    if isinstance(value, str):
        return _render_string(value, scope)
    if isinstance(value, dict):
        return {evaluate(key, scope): evaluate(item, scope) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [evaluate(item, scope) for item in value]
    return value


def evaluate_parameter(value: Any, scope: ExpressionContext, kind: str | None, name: str) -> Any:
    """A task input value for an action parameter of `kind` (engine.rules.parameter_kinds).

    A shell command or a URL written as text with expressions in it gets each expression's
    value inserted the way a rule's parameters insert theirs: quoted or encoded for the
    place the text puts it, refused where it would choose the program (the shell lexer
    decides, engine.rules.shell_quoting). So `cmd: echo <% ctx().msg %>` echoes whatever
    `msg` holds, `; rm -rf ~` included, and never runs it. Any other value: `evaluate`.
    """
    if kind is None or not isinstance(value, str) or not has_expressions(value):
        return evaluate(value, scope)
    if scope.progress is not None:
        scope.progress(value)
    pattern = _YAQL if "<%" in value else _JINJA_EXPRESSION
    found = list(pattern.finditer(value))
    if pattern is _YAQL:
        _refuse_unclosed(value, found)
    source, names, position = [], {}, 0
    for index, match in enumerate(found):
        source.append(_literal(value[position : match.start()], value, name))
        names[f"hookyard_value_{index}"] = _segment_value(match, pattern is _YAQL, scope)
        source.append(f"{{{{ hookyard_value_{index} }}}}")
        position = match.end()
    source.append(_literal(value[position:], value, name))
    try:
        return parameter_kinds.render_parameter(kind, "".join(source), names, name)
    except TemplateError as error:
        message = str(error)
        for index, match in enumerate(found):  # the author's expressions, not ours
            message = message.replace(f"{{{{ hookyard_value_{index} }}}}", match.group(0))
        raise WorkflowExpressionError(f"input {name!r}: {message}", value) from None


def _literal(text: str, whole: str, name: str) -> str:
    if "{{" in text or "{%" in text or "{#" in text or "<%" in text:
        raise WorkflowExpressionError(
            f"input {name!r} is a shell command or URL: write it as text with <% %> or "
            f"{{{{ }}}} expressions only, not Jinja statements ({_shown(whole)})",
            whole,
        )
    return text


def _segment_value(match: re.Match[str], yaql: bool, scope: ExpressionContext) -> Any:
    source = match.group(1) if yaql else match.group(0)
    value = evaluate_yaql(source, scope) if yaql else _render_jinja(source, scope)
    if value == NONE_MARKER or value is None:
        return ""
    # The text Orquesta puts in the command is str() of the value (False, not false),
    # the same as in any other text; the shell quoting then keeps it one word.
    return value if isinstance(value, str) else str(value)


def _render_string(text: str, scope: ExpressionContext) -> Any:
    if scope.progress is not None and has_expressions(text):
        scope.progress(text)
    if "<%" in text:
        return _render_yaql(text, scope)
    if templates.is_template(text):
        return _render_jinja(text, scope)
    return text


def _render_yaql(text: str, scope: ExpressionContext) -> Any:
    found = list(_YAQL.finditer(text))
    _refuse_unclosed(text, found)
    if len(found) == 1 and found[0].group(0) == text.strip():
        # use_none's marker stays what it is in the workflow's data, as in StackStorm
        # (st2's integration tests expect it in an output); a task input drops it.
        return evaluate_yaql(found[0].group(1), scope)
    parts = []
    position = 0
    for match in found:
        parts.append(text[position : match.start()])
        value = evaluate_yaql(match.group(1), scope)
        # As Orquesta: str() of the value (a mapping shows as Python writes it).
        parts.append("" if value == NONE_MARKER else str(value))
        position = match.end()
    parts.append(text[position:])
    return "".join(parts)


def _refuse_unclosed(text: str, found: list[re.Match[str]]) -> None:
    rest = _YAQL.sub("", text)
    if "<%" in rest:
        raise WorkflowExpressionError(
            f"the expression opened with <% in {_shown(text)} is never closed with %>", text
        )
    if any("<%" in match.group(1) for match in found):
        inner = next(match.group(0) for match in found if "<%" in match.group(1))
        raise WorkflowExpressionError(f"YAQL syntax error in {inner}: <% inside <%", inner)


def _render_jinja(text: str, scope: ExpressionContext) -> Any:
    try:
        template = _compile_jinja(text)
        return template.render(_jinja_names(scope), keep_none_marker=True)
    except TemplateError as error:
        if isinstance(error.__cause__, MemoryError):
            # The step process's address-space limit (engine.workers.step_pool): it ends
            # the step, which names the limit, rather than this expression alone.
            raise error.__cause__ from None
        # Orquesta's words, so a StackStorm user finds the message they know.
        if isinstance(error, _FunctionError):
            cause = f"ExpressionEvaluationException: {error}"
        else:
            cause = _without_source(error, text)
        shown = text if len(text) <= 200 else text[:200] + "..."
        raise WorkflowExpressionError(
            f"JinjaEvaluationException: Unable to evaluate expression '{shown}'. {cause}", text
        ) from None


@functools.lru_cache(maxsize=4096)
def _compile_jinja(text: str) -> templates.Template:
    return templates.Template(text, environment=_SANDBOX)


def _jinja_names(scope: ExpressionContext) -> dict[str, Any]:
    names: dict[str, Any] = dict(_JINJA_FUNCTIONS)
    for name, function in CONTEXT_FUNCTIONS.items():
        names[name] = functools.partial(_checked, function, scope)
    return names


class _FunctionError(TemplateError):
    """A workflow function's own error (task(), st2kv()...) inside a Jinja expression."""


def _checked(function: Any, scope: ExpressionContext, *args: Any, **kwargs: Any) -> Any:
    # A WorkflowExpressionError inside Jinja would be reported as a render error of
    # unknown kind; its own message is the useful part.
    try:
        return function(scope, *args, **kwargs)
    except WorkflowExpressionError as error:
        raise _FunctionError(str(error)) from None


def _without_source(error: TemplateError, text: str) -> str:
    # The templates module quotes the source again; it is already named by the caller.
    shown = templates._shown(text)
    return str(error).replace(f" in template {shown}", "").replace(f" in {shown}", "")


def _shown(text: str) -> str:
    return repr(text if len(text) <= 200 else text[:200] + "...")


# --- static checks --------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def expression_problems(value: Any) -> list[str]:
    """A message for every expression in `value` that does not compile, quoting it."""
    problems: list[str] = []
    for text in _strings(value):
        if "<%" in text:
            found = list(_YAQL.finditer(text))
            try:
                _refuse_unclosed(text, found)
            except WorkflowExpressionError as error:
                problems.append(str(error))
                continue
            for match in found:
                try:
                    compile_yaql(match.group(1))
                except WorkflowExpressionError as error:
                    problems.append(str(error))
        elif templates.is_template(text):
            try:
                _compile_jinja(text)
            except TemplateError as error:
                problems.append(f"Jinja {error}")
    return problems


def ctx_names_read(value: Any) -> set[str]:
    """The variable names `value`'s expressions read with ctx(name) or ctx().name."""
    names: set[str] = set()
    for text in _strings(value):
        for expression in _expressions_in(text):
            for pattern in _CTX_READS:
                names.update(pattern.findall(expression))
    return names


def _expressions_in(text: str) -> list[str]:
    if "<%" in text:
        return [match.group(1) for match in _YAQL.finditer(text)]
    if templates.is_template(text):
        # Block tags ({% if ctx(x) %}) read names too: the whole text is the expression.
        return [text]
    return []
