"""URL templates (the `url` of an http-request action): each inserted value is encoded
for the part of the URL it lands in.

`url_template_source` rewrites a template at compile time, as the shell quoting does for
commands: every `{{ expr }}` is piped through the filter of its URL component, found from
the literal text before it:

- path, query and fragment: the value is percent-encoded whole (`quote(value, safe="")`),
  so `/`, `?`, `#`, `&`, `=`, `+`, `%` and spaces stay data and cannot add a path segment
  or a query parameter. A path segment whose text ends up exactly `.` or `..` is refused
  after rendering (HTTP clients resolve dot segments, so encoding them is not enough).
- scheme, host and port (`https://{{ host }}/...`): the value must be plain host
  characters (letters, digits, `.`, `-`, `_`, `~`); anything that would change the URL's
  structure (`/`, `@`, `:`, `?`, `#`...) is refused.
- the whole URL (the template is exactly one `{{ expr }}`, e.g. a callback URL from the
  payload) or a base URL at the very start (`{{ base }}/items/{{ id }}`): the value must
  be an absolute http(s) URL with a host (a base URL without query or fragment). Where it
  points is then checked like any URL, by the outbound destination guard.

`{{ value | unquoted }}` inserts a value as it is (the author's explicit opt-out).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import jinja2
from jinja2 import nodes

from engine.errors import TemplateError
from engine.rules import templates

__all__ = ["UrlTemplate", "compile_url_template", "render_url", "url_template_source"]

# Components of a URL, as far as an inserted value is concerned.
WHOLE, BASE, AUTHORITY, PATH, QUERY, FRAGMENT = (
    "whole",
    "base",
    "authority",
    "path",
    "query",
    "fragment",
)
# The filter (registered on every template environment) that encodes for each component.
_FILTERS = {
    WHOLE: "_url_whole",
    BASE: "_url_base",
    AUTHORITY: "_url_host_part",
    PATH: "_url_path_part",
    QUERY: "_url_query_part",
    FRAGMENT: "_url_fragment_part",
}
_SCHEMES = ("http", "https")
_HOST_CHARACTERS = re.compile(r"[A-Za-z0-9._~-]*")
_NOT_IN_URL = re.compile(r"[\x00-\x20\x7f\\]")
_JINJA_MARKUP = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\})", re.DOTALL)
_DOT_SEGMENTS = frozenset({".", ".."})
# Literal text standing for an inserted value when later positions are worked out.
_HOST_PLACEHOLDER = "a"
_URL_PLACEHOLDER = "http://a"
_SHOWN_CHARS = 80
_PARSER = jinja2.Environment()


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "...")


def _as_text(value: Any, component: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, list | tuple | dict):
        return str(value)  # as the plain template renders it
    raise TemplateError(
        f"a {type(value).__name__!r} object cannot be inserted into the {component} of a URL"
    )


# --- the filters -----------------------------------------------------------------


def _encoded(component: str):
    def encode(value: Any) -> str:
        return quote(_as_text(value, component), safe="")

    encode.__name__ = f"_url_{component}_part"
    return encode


def _url_host_part(value: Any) -> str:
    text = _as_text(value, "host")
    if _HOST_CHARACTERS.fullmatch(text) is None:
        bad = next(char for char in text if not _HOST_CHARACTERS.fullmatch(char))
        raise TemplateError(
            f"the value {_shown(text)} inserted into the scheme, host or port of a URL "
            f"contains {bad!r}: only letters, digits, '.', '-', '_' and '~' may stand there. "
            "Insert a whole URL as the only expression of the template, or write "
            "'| unquoted' if the value is trusted"
        )
    return text


def _checked_url(value: Any, *, base: bool) -> str:
    text = _as_text(value, "URL")
    what = "base URL" if base else "URL"
    bad = _NOT_IN_URL.search(text)
    if bad:
        raise TemplateError(
            f"the {what} {_shown(text)} contains {bad.group()!r}, which a URL cannot hold"
        )
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  # raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise TemplateError(f"the {what} {_shown(text)} is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in _SCHEMES or not parts.hostname:
        raise TemplateError(
            f"the {what} {_shown(text)} is not an absolute http:// or https:// URL with a host"
        )
    if base and (parts.query or parts.fragment or "?" in text or "#" in text):
        raise TemplateError(
            f"the base URL {_shown(text)} at the start of a URL template has a query or "
            "fragment; insert it as the only expression of the template instead"
        )
    return text


def _url_whole(value: Any) -> str:
    return _checked_url(value, base=False)


def _url_base(value: Any) -> str:
    return _checked_url(value, base=True)


for _name, _filter in {
    _FILTERS[WHOLE]: _url_whole,
    _FILTERS[BASE]: _url_base,
    _FILTERS[AUTHORITY]: _url_host_part,
    _FILTERS[PATH]: _encoded("path"),
    _FILTERS[QUERY]: _encoded("query"),
    _FILTERS[FRAGMENT]: _encoded("fragment"),
}.items():
    templates.register_filter(_name, _filter)


# --- the compile-time rewrite ------------------------------------------------------


def _component_at(before: str) -> str:
    """The URL component that text appended to `before` falls in."""
    if "#" in before:
        return FRAGMENT
    if "?" in before:
        return QUERY
    scheme_end = before.find("://")
    rest = before[scheme_end + 3 :] if scheme_end >= 0 else before
    return PATH if "/" in rest else AUTHORITY


def _is_unquoted(inner: str) -> bool:
    """Whether the expression's outermost filter is `unquoted` (the author's opt-out)."""
    try:
        tree = _PARSER.parse("{{" + inner + "}}")
    except jinja2.TemplateSyntaxError:
        return False  # reported when the rewritten template compiles
    body = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(body, nodes.Output) or len(body.nodes) != 1:
        return False
    expression = body.nodes[0]
    return isinstance(expression, nodes.Filter) and expression.name == "unquoted"


@dataclass(frozen=True)
class _Rewrite:
    source: str
    # Whether a value was encoded into the path (its dot segments are checked after rendering).
    path_values: bool


def _rewrite(source: str) -> _Rewrite:
    pieces = _JINJA_MARKUP.split(source)
    expressions = [p for p in pieces if p.startswith("{{") and p.endswith("}}") and len(p) >= 4]
    literal_text = "".join(p for p in pieces if not p.startswith(("{{", "{%", "{#")))
    single = len(expressions) == 1 and not literal_text.strip() and len(pieces) <= 3
    out: list[str] = []
    before = ""  # the literal URL so far, with a placeholder for each value
    path_values = False
    for piece in pieces:
        if piece in expressions:
            left = "{{-" if piece.startswith("{{-") else "{{"
            right = "-}}" if piece.endswith("-}}") and len(piece) >= len(left) + 3 else "}}"
            inner = piece[len(left) : len(piece) - len(right)]
            at_start = not before.strip()
            if single:
                component = WHOLE
            elif at_start:
                component = BASE
            else:
                component = _component_at(before)
            if _is_unquoted(inner):
                out.append(piece)
            else:
                # After a {% %} block the component is only a guess (a branch's '?' or
                # '#' may not be rendered): the value may be in the path after all.
                in_path = component == PATH or (component != WHOLE and "{%" in "".join(out))
                path_values = path_values or in_path
                out.append(f"{left} ({inner}) | {_FILTERS[component]} {right}")
            before += _URL_PLACEHOLDER if at_start else _HOST_PLACEHOLDER
        else:
            out.append(piece)
            if not piece.startswith(("{%", "{#")):
                before += piece
    return _Rewrite("".join(out), path_values)


def url_template_source(source: str) -> str:
    """`source` with each `{{ expr }}` piped through the encoding its URL component needs."""
    return _rewrite(source).source


# --- compiling and rendering ---------------------------------------------------------


class UrlTemplate:
    """A URL template, compiled with its values' encodings; build it with
    compile_url_template (cached)."""

    __slots__ = ("_check_dot_segments", "_template", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        rewrite = _rewrite(source)
        self._check_dot_segments = rewrite.path_values
        try:
            self._template = templates.compile_template(rewrite.source)
        except TemplateError as exc:
            raise TemplateError(f"URL template {_shown(source)}: {exc}") from None

    def render(self, context: Mapping[str, Any]) -> Any:
        try:
            url = self._template.render(context)
        except TemplateError as exc:
            raise TemplateError(f"URL template {_shown(self.source)}: {exc}") from None
        if self._check_dot_segments and isinstance(url, str):
            _refuse_dot_segments(url, self.source)
        return url


def _refuse_dot_segments(url: str, source: str) -> None:
    path = urlsplit(url).path
    for segment in path.split("/"):
        if unquote(segment) in _DOT_SEGMENTS:
            raise TemplateError(
                f"URL template {_shown(source)} rendered the path {_shown(path)}, which has a "
                f"{segment!r} segment: a value inserted into a URL path may not make a '.' or "
                "'..' segment (it would move the request to another path)"
            )


@lru_cache(maxsize=1024)
def compile_url_template(source: str) -> UrlTemplate:
    """Compile a URL template once; a syntax error is a TemplateError."""
    return UrlTemplate(source)


def render_url(source: str, context: Mapping[str, Any]) -> Any:
    """Render a URL template with every inserted value encoded for its URL component."""
    if not templates.is_template(source):
        return source
    return compile_url_template(source).render(context)
