"""Jinja templates in criteria patterns and action parameters, rendered in a sandbox.

A string that is exactly one ``{{ expr }}`` is *native*: it renders to the expression's
Python value (int, list, dict, bool, None), fixing StackStorm's everything-is-a-string
parameters. Any other template renders to a str. Values reached through the context are
data and are never rendered again, so a payload cannot inject a template.

Every failure leaves this module as ``engine.errors.TemplateError`` (``SandboxViolation``
when the sandbox refused something); no jinja or Python exception escapes.
"""

from __future__ import annotations

import json
import os.path
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import jinja2
import jmespath
import yaml
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.runtime import Macro
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment

from engine.errors import RegistryError, SandboxViolation, ShellContextError, TemplateError
from engine.rules import regexes, shell_quoting, template_limits
from engine.rules.shell_quoting import Unquoted
from engine.rules.template_limits import MAX_RENDERED_CHARS

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

# Bound for int ** int: results wider than this many bits would take unbounded time.
_MAX_POWER_BITS = 100_000
_MAX_LIPSUM_PARAGRAPHS = 100
# Source shown in error messages is cut so one huge parameter cannot flood a log line.
_SHOWN_SOURCE_CHARS = 200

# StackStorm's use_none marks "this parameter is None" with a magic string that survives
# string rendering; the same marker keeps StackStorm templates working unchanged.
_NONE_MARKER = "%*****__%NONE%__*****%"

# str.format / format_map reach attributes through the format mini-language
# ('{0.__class__}'), so they are refused outright instead of wrapped.
_REFUSED_ATTRIBUTES = frozenset({"format", "format_map", "mro"})

_NATIVE_SOURCE = re.compile(r"\A\s*\{\{-?(?P<expr>.*?)-?\}\}\s*\Z", re.DOTALL)
_UNSAFE_ATTRIBUTE_MESSAGE = re.compile(
    r"access to attribute '(?P<attr>[^']*)' of '(?P<type>[^']*)' object is unsafe"
)


# --- the sandbox -------------------------------------------------------------


class _HookyardSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus dict-key-first attribute access and cheap size guards."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    # No compile-time folding (see template_limits); loops and `~` are bounded through
    # these attributes, which the generated code reaches as environment.<name>.
    code_generator_class = template_limits.NoFoldingCodeGenerator
    count_loop = staticmethod(template_limits.counted)
    sized_parts = staticmethod(template_limits.sized_parts)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr in _REFUSED_ATTRIBUTES:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Never hand out a (wrapped) str.format: is_safe_attribute refuses it instead.
        return None

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Payload keys win over dict methods: `trigger.body.items` is the payload's
        # "items" list, not dict.items, as StackStorm rule authors expect.
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (LookupError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            _refuse_huge_power(left, right)
        else:
            template_limits.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(__obj, Macro):
            template_limits.count_macro_call()
        # str.center(10**9) and friends are sized before they run.
        replaced = template_limits.check_method_call(__obj, args, kwargs)
        return super().call(__context, __obj, *(args if replaced is None else replaced), **kwargs)


def _refuse_huge_power(base: Any, exponent: Any) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int)) or abs(base) <= 1:
        return
    if exponent * abs(base).bit_length() > _MAX_POWER_BITS:
        raise SecurityError(f"the power {base} ** {exponent} is too large")


# jinja's own safe_range raises OverflowError; a SecurityError reports it as a refusal.
def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    try:
        too_long = len(numbers) > MAX_RANGE
    except OverflowError:  # longer than sys.maxsize
        too_long = True
    if too_long:
        raise SecurityError(f"range() of more than {MAX_RANGE} numbers is refused")
    return numbers


# Same parameter names as jinja's lipsum global, so existing templates keep working.
def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > _MAX_LIPSUM_PARAGRAPHS:
        raise SecurityError(f"lipsum of more than {_MAX_LIPSUM_PARAGRAPHS} paragraphs")
    return jinja2.utils.generate_lorem_ipsum(n=n, html=html, min=min, max=max)


# --- StackStorm filters (semantics from st2common/jinja/filters) ---------------


def _to_json_string(
    value: Any, indent: int | None = 4, sort_keys: bool = False, separators: Any = (",", ":")
) -> str:
    return json.dumps(value, indent=indent, sort_keys=sort_keys, separators=tuple(separators))


def _from_json_string(value: str) -> Any:
    return json.loads(value)


def _to_yaml_string(value: Any, indent: int = 4, allow_unicode: bool = True) -> str:
    return yaml.safe_dump(
        value, indent=indent, allow_unicode=allow_unicode, default_flow_style=False
    )


def _from_yaml_string(value: str) -> Any:
    # An alias bomb in a payload is refused here (engine.support.safeyaml), not expanded later.
    # (Imported here to keep this module's import block as it was.)
    from engine.errors import YamlLimitError
    from engine.support import safeyaml

    try:
        return safeyaml.safe_load(value)
    except YamlLimitError as exc:
        raise TemplateError(f"from_yaml_string: {exc.message}") from None


def _json_dumps(value: Any) -> str:
    # to_complex and json_escape are both plain json.dumps in StackStorm.
    return json.dumps(value)


def _regex_flags(ignorecase: bool) -> int:
    return regexes.IGNORECASE if ignorecase else 0


def _regex_match(value: Any, pattern: str = "", ignorecase: bool = False) -> bool:
    return regexes.match(pattern, str(value), _regex_flags(ignorecase)) is not None


def _regex_search(value: Any, pattern: str = "", ignorecase: bool = False) -> bool:
    return regexes.search(pattern, str(value), _regex_flags(ignorecase)) is not None


def _regex_replace(
    value: Any = "", pattern: str = "", replacement: str = "", ignorecase: bool = False
) -> str:
    text = str(value)
    room = [MAX_RENDERED_CHARS - len(text)]

    def expand(found: Any) -> str:
        # Each replacement counts before the next is built: a long one times many
        # matches cannot grow past the bound.
        piece = found.expand(replacement)
        room[0] -= len(piece)
        if room[0] < 0:
            raise SecurityError(
                f"regex_replace is too large: it would build more than {MAX_RENDERED_CHARS} "
                "characters"
            )
        return piece

    return regexes.sub(pattern, expand, text, _regex_flags(ignorecase))  # type: ignore[arg-type]


def _regex_substring(
    value: Any, pattern: str = "", ignorecase: bool = False, group_index: int = 0
) -> str:
    """The group_index-th capture group of the first match; "" when nothing matches."""
    found = regexes.search(pattern, str(value), _regex_flags(ignorecase))
    if found is None:
        return ""
    try:
        return found.groups()[group_index]
    except IndexError:
        return ""


def _use_none(value: Any) -> Any:
    return _NONE_MARKER if value is None else value


def _json_query(value: Any, query: str) -> Any:
    return jmespath.search(query, value)


_STACKSTORM_FILTERS: dict[str, Callable[..., Any]] = {
    "to_json_string": _to_json_string,
    "from_json_string": _from_json_string,
    "to_yaml_string": _to_yaml_string,
    "from_yaml_string": _from_yaml_string,
    "to_complex": _json_dumps,
    "json_escape": _json_dumps,
    "regex_match": _regex_match,
    "regex_replace": _regex_replace,
    "regex_search": _regex_search,
    "regex_substring": _regex_substring,
    "use_none": _use_none,
    "basename": os.path.basename,
    "dirname": os.path.dirname,
    "json_query": _json_query,
}


# --- only data leaves a template -----------------------------------------------

_DATA_SCALARS = (str, int, float, bool, type(None))


def _require_data(value: Any) -> Any:
    """Return value if it is plain data; otherwise fail, so no internal repr leaks out."""
    if isinstance(value, _DATA_SCALARS):
        return value
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises the undefined (or sandbox) error here
    if isinstance(value, list | tuple):
        for item in value:
            _require_data(item)
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            _require_data(key)
            _require_data(item)
        return value
    hint = " (add |list)" if hasattr(value, "__next__") or isinstance(value, range) else ""
    raise SandboxViolation(f"template produced a {type(value).__name__!r} object, not data{hint}")


# --- shell commands: every inserted value is quoted (engine.rules.shell_quoting) ----


def _unquoted(value: Any) -> Unquoted:
    return Unquoted("" if value is None else value)


def _shell_text(value: Any) -> str:
    value = _require_data(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return _json_dumps(value)
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


_SHELL_FILTERS: dict[str | None, Callable[..., str]] = {
    shell_quoting.WORD: _shell_word,
    shell_quoting.DOUBLE: _shell_in_double_quotes,
    shell_quoting.SINGLE: _shell_in_single_quotes,
    None: _shell_refused,
}


def _quote_shell_sites(environment: Any, source: str, tree: nodes.Template) -> tuple[str, ...]:
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
        name = _SHELL_FILTERS[site.quoting].__name__
        site.output.nodes[site.index] = nodes.Filter(
            site.node, name, arguments, [], None, None, lineno=site.line
        )
    return tuple(problems)


def _new_environment(shell: bool = False) -> _HookyardSandbox:
    # trim_blocks/lstrip_blocks as StackStorm sets them, so block templates render alike.
    environment = _HookyardSandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_require_data,
        optimized=False,  # no compile-time folding: see template_limits
    )
    environment.globals["lipsum"] = _bounded_lipsum
    environment.globals["range"] = _bounded_range
    environment.filters.update(_STACKSTORM_FILTERS)
    environment.filters.update(template_limits.bounded_filters(environment.filters))
    environment.filters["unquoted"] = _unquoted
    if shell:
        environment.filters.update({f.__name__: f for f in _SHELL_FILTERS.values()})
    return environment


_ENVIRONMENT = _new_environment()
# Renders shell command strings (local-shell-cmd `cmd`): every value an expression inserts
# is quoted for the shell context it stands in, or refused where that context is unknown
# or unsafe (see shell_quoting), unless the author writes `{{ value | unquoted }}`.
_SHELL_ENVIRONMENT = _new_environment(shell=True)


def sandbox_with_filters(filters: Mapping[str, Callable[..., Any]]) -> jinja2.Environment:
    """A new sandbox with the same limits whose filters also include `filters` (a name
    already taken is replaced: Orquesta's catalog differs from the rule filters); render
    with ``Template(source, environment=...)``."""
    environment = _new_environment()
    environment.filters.update(filters)
    environment.filters.update(template_limits.bounded_filters(environment.filters))
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
                self.shell_problems = _quote_shell_sites(environment, source, tree)
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

    def render(self, context: Mapping[str, Any]) -> Any:
        """Render against context: the expression's value if native, else a str."""
        try:
            with template_limits.loop_budget():
                if self.native:
                    return self._native_value(self._compiled(context))
                return self._text(self._compiled.generate(context))
        except Exception as error:
            raise _translate(self.source, error) from error

    def _native_value(self, value: Any) -> Any:
        _require_data(value)
        template_limits.check_native_size(value)
        if isinstance(value, str):
            if value == _NONE_MARKER:
                return None
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
        if text == _NONE_MARKER:
            return None
        # use_none inside a larger string has no None to become: it renders as nothing.
        return text.replace(_NONE_MARKER, "")

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
