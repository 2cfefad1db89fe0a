"""The sandbox every template renders in, and the rule that only data leaves it.

jinja's immutable sandbox, plus: dict keys before attributes (`trigger.body.items` is the
payload's "items"), str.format refused, and cheap size guards on operators, method calls,
loops and the range/lipsum globals (with engine.rules.template_limits), so that a template
a payload steers cannot run unbounded. `require_data` refuses any value that is not plain
data, so no internal object's repr leaks out of a template.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.runtime import Macro
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment

from engine.errors import SandboxViolation
from engine.rules import template_limits

__all__ = ["HookyardSandbox", "bounded_lipsum", "bounded_range", "require_data"]

# Bound for int ** int: results wider than this many bits would take unbounded time.
_MAX_POWER_BITS = 100_000
_MAX_LIPSUM_PARAGRAPHS = 100

# str.format / format_map reach attributes through the format mini-language
# ('{0.__class__}'), so they are refused outright instead of wrapped.
_REFUSED_ATTRIBUTES = frozenset({"format", "format_map", "mro"})


class HookyardSandbox(ImmutableSandboxedEnvironment):
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
def bounded_range(*args: int) -> range:
    numbers = range(*args)
    try:
        too_long = len(numbers) > MAX_RANGE
    except OverflowError:  # longer than sys.maxsize
        too_long = True
    if too_long:
        raise SecurityError(f"range() of more than {MAX_RANGE} numbers is refused")
    return numbers


# Same parameter names as jinja's lipsum global, so existing templates keep working.
def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > _MAX_LIPSUM_PARAGRAPHS:
        raise SecurityError(f"lipsum of more than {_MAX_LIPSUM_PARAGRAPHS} paragraphs")
    return jinja2.utils.generate_lorem_ipsum(n=n, html=html, min=min, max=max)


# --- only data leaves a template -----------------------------------------------

_DATA_SCALARS = (str, int, float, bool, type(None))


def require_data(value: Any) -> Any:
    """Return value if it is plain data; otherwise fail, so no internal repr leaks out."""
    if isinstance(value, _DATA_SCALARS):
        return value
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises the undefined (or sandbox) error here
    if isinstance(value, list | tuple):
        for item in value:
            require_data(item)
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            require_data(key)
            require_data(item)
        return value
    hint = " (add |list)" if hasattr(value, "__next__") or isinstance(value, range) else ""
    raise SandboxViolation(f"template produced a {type(value).__name__!r} object, not data{hint}")
