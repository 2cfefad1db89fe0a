"""Jinja templates in criteria patterns and action parameters, rendered in a sandbox.

A string that is exactly one ``{{ expr }}`` is *native*: it renders to the expression's
Python value (int, list, dict, bool, None), fixing StackStorm's everything-is-a-string
parameters. Any other template renders to a str. Values reached through the context are
data and are never rendered again, so a payload cannot inject a template.

Every failure leaves this module as ``engine.errors.TemplateError`` (``SandboxViolation``
when the sandbox refused something); no jinja or Python exception escapes.

The sandbox is engine.rules.template_sandbox, StackStorm's filters engine.rules.filters,
the quoting of shell command templates engine.rules.shell_filters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError

from engine.errors import RegistryError, SandboxViolation, ShellContextError, TemplateError
from engine.rules import template_limits
from engine.rules.filters import NONE_MARKER, STACKSTORM_FILTERS
from engine.rules.shell_filters import SHELL_FILTERS, quote_shell_sites, unquoted
from engine.rules.shell_quoting import Unquoted
from engine.rules.template_limits import MAX_RENDERED_CHARS
from engine.rules.template_sandbox import (
    HookyardSandbox,
    bounded_lipsum,
    bounded_range,
    require_data,
)

__all__ = [
    "MAX_RENDERED_CHARS",
    "Template",
    "Unquoted",
    "compile_template",
    "is_template",
    "register_filter",
    "render_value",
    "sandbox_with_filters",
]

# Source shown in error messages is cut so one huge parameter cannot flood a log line.
_SHOWN_SOURCE_CHARS = 200

_NATIVE_SOURCE = re.compile(r"\A\s*\{\{-?(?P<expr>.*?)-?\}\}\s*\Z", re.DOTALL)
_UNSAFE_ATTRIBUTE_MESSAGE = re.compile(
    r"access to attribute '(?P<attr>[^']*)' of '(?P<type>[^']*)' object is unsafe"
)


# --- the environments ----------------------------------------------------------


def _new_environment(shell: bool = False) -> HookyardSandbox:
    # trim_blocks/lstrip_blocks as StackStorm sets them, so block templates render alike.
    environment = HookyardSandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=require_data,
        optimized=False,  # no compile-time folding: see template_limits
    )
    environment.globals["lipsum"] = bounded_lipsum
    environment.globals["range"] = bounded_range
    environment.filters.update(STACKSTORM_FILTERS)
    environment.filters.update(template_limits.bounded_filters(environment.filters))
    environment.filters["unquoted"] = unquoted
    if shell:
        environment.filters.update({f.__name__: f for f in SHELL_FILTERS.values()})
    return environment


_ENVIRONMENT = _new_environment()
# Renders shell command strings (local-shell-cmd `cmd`): every value an expression inserts
# is quoted for the shell context it stands in, or refused where that context is unknown
# or unsafe (see shell_quoting), unless the author writes `{{ value | unquoted }}`.
_SHELL_ENVIRONMENT = _new_environment(shell=True)


def sandbox_with_filters(
    filters: Mapping[str, Callable[..., Any]], shell: bool = False
) -> jinja2.Environment:
    """A new sandbox with the same limits whose filters also include `filters` (a name
    already taken is replaced: Orquesta's catalog differs from the rule filters); render
    with ``Template(source, environment=...)``. With `shell`, one for shell commands
    (``Template(source, True, environment)``), its quoting filters kept."""
    environment = _new_environment(shell)
    environment.filters.update(filters)
    environment.filters.update(template_limits.bounded_filters(environment.filters))
    if shell:
        environment.filters.update({f.__name__: f for f in SHELL_FILTERS.values()})
    return environment


def register_filter(name: str, func: Callable[..., Any]) -> None:
    """Add a filter to every template (e.g. ``decrypt_kv``); a taken name is an error."""
    if not name.isidentifier():
        raise RegistryError(f"template filter name {name!r} is not an identifier")
    if not callable(func):
        raise RegistryError(f"template filter {name!r} must be callable, got {func!r}")
    if name in _ENVIRONMENT.filters:
        raise RegistryError(f"template filter {name!r} is already registered")
    _ENVIRONMENT.filters[name] = func
    _SHELL_ENVIRONMENT.filters[name] = func


# --- compiling and rendering ---------------------------------------------------


def is_template(value: str) -> bool:
    """True if value contains Jinja markup; a cheap test for the hot path."""
    return "{{" in value or "{%" in value


def _shown(source: str) -> str:
    if len(source) > _SHOWN_SOURCE_CHARS:
        return repr(source[:_SHOWN_SOURCE_CHARS] + "...")
    return repr(source)


def _translate(source: str, error: Exception) -> TemplateError:
    if isinstance(error, TemplateError):
        return error
    if isinstance(error, SecurityError):
        unsafe = _UNSAFE_ATTRIBUTE_MESSAGE.search(str(error))
        if unsafe:
            return SandboxViolation(
                f"template tried to access an unsafe attribute {unsafe['attr']!r} "
                f"(of a {unsafe['type']!r} object) in template {_shown(source)}"
            )
        return SandboxViolation(f"template refused by the sandbox: {error} in {_shown(source)}")
    if isinstance(error, jinja2.UndefinedError):
        return TemplateError(f"undefined value in template {_shown(source)}: {error}")
    return TemplateError(
        f"cannot render template {_shown(source)}: {type(error).__name__}: {error}"
    )


def _is_single_expression(tree: nodes.Template) -> bool:
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return False
    meaningful = [
        node
        for node in tree.body[0].nodes
        if not (isinstance(node, nodes.TemplateData) and not node.data.strip())
    ]
    return len(meaningful) == 1 and not isinstance(meaningful[0], nodes.TemplateData)


class Template:
    """A compiled template; build it with compile_template (cached)."""

    __slots__ = ("_compiled", "native", "shell_problems", "source")

    def __init__(
        self, source: str, shell: bool = False, environment: jinja2.Environment | None = None
    ) -> None:
        self.source = source
        if environment is None:
            environment = _SHELL_ENVIRONMENT if shell else _ENVIRONMENT
        #: Shell commands: each {{ }} that refuses its value (see shell_quoting).
        self.shell_problems: tuple[str, ...] = ()
        try:
            tree = environment.parse(source)
            if shell:
                self.shell_problems = quote_shell_sites(environment, source, tree)
            native_source = _NATIVE_SOURCE.match(source)
            # A shell command is always text: its values are quoted words in it.
            self.native = not shell and native_source is not None and _is_single_expression(tree)
            if self.native:
                self._compiled: Any = environment.compile_expression(
                    native_source["expr"],  # type: ignore[index]  # native implies a match
                    undefined_to_none=False,
                )
            else:
                self._compiled = environment.from_string(template_limits.guard_loops(tree))
        except TemplateSyntaxError as error:
            raise TemplateError(
                f"template syntax error on line {error.lineno}: {error.message} in {_shown(source)}"
            ) from None
        except Exception as error:
            raise _translate(source, error) from error

    def __repr__(self) -> str:
        return f"Template({self.source!r}, native={self.native})"

    def render(self, context: Mapping[str, Any], *, keep_none_marker: bool = False) -> Any:
        """Render against context: the expression's value if native, else a str.

        A whole value that is use_none's marker renders None, unless `keep_none_marker`
        (a workflow's data keeps the marker as StackStorm's does; its task inputs drop it).
        """
        try:
            with template_limits.loop_budget():
                if self.native:
                    return self._native_value(self._compiled(context), keep_none_marker)
                text = self._text(self._compiled.generate(context))
                return NONE_MARKER if text is None and keep_none_marker else text
        except Exception as error:
            raise _translate(self.source, error) from error

    def _native_value(self, value: Any, keep_none_marker: bool = False) -> Any:
        require_data(value)
        template_limits.check_native_size(value)
        if isinstance(value, str):
            if value == NONE_MARKER:
                return NONE_MARKER if keep_none_marker else None
            if len(value) > MAX_RENDERED_CHARS:
                raise self._too_large()
            return str(value)  # a Markup becomes a plain str
        return value

    def _text(self, chunks: Any) -> str | None:
        # Counting while generating stops a runaway loop at the bound, not after it.
        parts: list[str] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise self._too_large()
            parts.append(chunk)
        text = "".join(parts)
        if text == NONE_MARKER:
            return None
        # use_none inside a larger string has no None to become: it renders as nothing.
        return text.replace(NONE_MARKER, "")

    def _too_large(self) -> TemplateError:
        return TemplateError(
            f"template {_shown(self.source)} rendered more than {MAX_RENDERED_CHARS} characters"
        )


@lru_cache(maxsize=4096)
def compile_template(source: str, shell: bool = False) -> Template:
    """Compile source once; a syntax error is a TemplateError naming the line.

    With shell=True every value an expression inserts is shell-quoted (see Unquoted).
    """
    return Template(source, shell)


def render_shell_command(
    source: str, context: Mapping[str, Any], parameter: str | None = None
) -> str:
    """Render a shell command template with every inserted value quoted.

    A value where its shell context is unknown or unsafe raises ShellContextError, whose
    message names `parameter` (when given), the context and how to pass the value instead.
    """
    if not is_template(source):
        return source
    try:
        return compile_template(source, True).render(context) or ""
    except ShellContextError as error:
        if parameter is None:
            raise
        raise ShellContextError(f"parameter {parameter!r}: {error}") from None


def shell_template_problems(source: str) -> tuple[str, ...]:
    """Why values of shell command template `source` would be refused, one per {{ }}.

    Raises TemplateError if `source` does not compile.
    """
    if not is_template(source):
        return ()
    return compile_template(source, True).shell_problems


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside value (dicts, lists, tuples), returning copies.

    Only the strings of value itself are templates; whatever a template pulls out of
    context is data and is never rendered again.
    """
    if isinstance(value, str):
        return compile_template(value).render(context) if is_template(value) else value
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if isinstance(value, tuple):
        return tuple(render_value(item, context) for item in value)
    return value
