"""StackStorm's Jinja filters, as rule and action templates use them.

The names, arguments and results of st2common/jinja/filters (to_json_string,
from_yaml_string, regex_replace, use_none, json_query...), bounded where a payload could
make them unbounded: regular expressions run with a time limit (engine.rules.regexes),
regex_replace stops at MAX_RENDERED_CHARS, from_yaml_string refuses alias bombs
(engine.support.safeyaml). engine.rules.templates adds them to every template.
"""

from __future__ import annotations

import json
import os.path
from collections.abc import Callable
from typing import Any

import jmespath
import yaml
from jinja2.exceptions import SecurityError

from engine.errors import TemplateError, YamlLimitError
from engine.rules import regexes
from engine.rules.template_limits import MAX_RENDERED_CHARS
from engine.support import safeyaml

__all__ = ["NONE_MARKER", "STACKSTORM_FILTERS", "json_dumps"]

# StackStorm's use_none marks "this parameter is None" with a magic string that survives
# string rendering; the same marker keeps StackStorm templates working unchanged.
NONE_MARKER = "%*****__%NONE%__*****%"


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
    try:
        return safeyaml.safe_load(value)
    except YamlLimitError as exc:
        raise TemplateError(f"from_yaml_string: {exc.message}") from None


def json_dumps(value: Any) -> str:
    """JSON text of `value`: to_complex and json_escape, both plain json.dumps in StackStorm."""
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
    return NONE_MARKER if value is None else value


def _json_query(value: Any, query: str) -> Any:
    return jmespath.search(query, value)


STACKSTORM_FILTERS: dict[str, Callable[..., Any]] = {
    "to_json_string": _to_json_string,
    "from_json_string": _from_json_string,
    "to_yaml_string": _to_yaml_string,
    "from_yaml_string": _from_yaml_string,
    "to_complex": json_dumps,
    "json_escape": json_dumps,
    "regex_match": _regex_match,
    "regex_replace": _regex_replace,
    "regex_search": _regex_search,
    "regex_substring": _regex_substring,
    "use_none": _use_none,
    "basename": os.path.basename,
    "dirname": os.path.dirname,
    "json_query": _json_query,
}
