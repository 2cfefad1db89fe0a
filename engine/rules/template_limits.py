"""Cheap internal bounds on what a template may allocate or loop, at compile and render.

A rule author's template runs in the sandbox, but the sandbox alone bounds neither time
nor memory: ``{{ 'x'|center(999999999) }}`` allocates a gigabyte — at *compile* time,
because Jinja folds constant expressions while compiling — and nested ``range(100000)``
loops never finish. Here:

- nothing is folded at compile time (``NoFoldingCodeGenerator``), so compiling a template
  costs only its size;
- filters and ``str`` methods that build a result from a small input (center, ljust,
  indent, format, wordwrap, join, replace, ...) refuse a result longer than
  ``MAX_RENDERED_CHARS`` *before* building it; so do ``~`` and ``+``;
- every ``{% for %}`` iteration of one render counts against ``MAX_LOOP_ITERATIONS``.

An outside watchdog bounds CPU time; these bounds keep load and render from allocating
or spinning beyond the limits in the first place. Violations raise jinja's SecurityError,
which templates.py reports as a SandboxViolation.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import MAX_RANGE

#: A rendered string (or any intermediate str/list a template builds) longer than this
#: is refused.
MAX_RENDERED_CHARS = 1 << 20
#: Data a native value ({{ expr }} alone) may stand for, counting a value shared by
#: reference (a YAML alias, a repeated list) once per reference: the rules worker's
#: process encodes it whole as JSON.
MAX_NATIVE_CHARS = 16 << 20
#: Iterations of all {% for %} loops in one render, nested loops multiplied.
MAX_LOOP_ITERATIONS = 200_000
# JSON indentation beyond this only wastes memory (indent times depth per line).
_MAX_JSON_INDENT = 64
# Character copies wordwrap may make breaking long words (about a second).
_MAX_WRAP_COPIES = 10**10

# One printf conversion: %[(key)][flags][width][.precision]type
_PRINTF_FIELD = re.compile(
    r"%(?:\([^)]*\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?[hlL]?[a-zA-Z%]"
)


# --- compile time: fold nothing ----------------------------------------------------


class NoFoldingCodeGenerator(CodeGenerator):
    """Jinja's code generator without compile-time evaluation of expressions.

    Jinja evaluates constant ``{{ }}`` output (filters included) while compiling, so a
    constant ``'x'|center(999999999)`` would be computed by ``load_rule``. Here only
    literal template text is a constant; every expression runs at render, inside the
    sandbox and its bounds. (The environment's ``optimized=False`` turns off the other
    folding pass.)
    """

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        if isinstance(node, nodes.TemplateData):
            return super()._output_child_to_const(node, frame, finalize)
        raise nodes.Impossible()

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # `a ~ b ~ ...`: the parts go through environment.sized_parts (check_concat)
        # before they are joined.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"{join}(environment.sized_parts((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write(")))")


# --- loops ------------------------------------------------------------------------


class _LoopBudget:
    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_LOOP_ITERATIONS


_BUDGET: ContextVar[_LoopBudget | None] = ContextVar("hookyard_loop_budget", default=None)


@contextlib.contextmanager
def loop_budget() -> Iterator[None]:
    """One render: all loops inside share MAX_LOOP_ITERATIONS."""
    token = _BUDGET.set(_LoopBudget())
    try:
        yield
    finally:
        _BUDGET.reset(token)


class _CountedIterable:
    """An iterable whose every item is paid for from the render's loop budget."""

    __slots__ = ("_iterable",)

    def __init__(self, iterable: Iterable[Any]) -> None:
        self._iterable = iterable

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]  # TypeError: LoopContext counts

    def __iter__(self) -> Iterator[Any]:
        budget = _BUDGET.get() or _LoopBudget()
        for item in self._iterable:
            budget.left -= 1
            if budget.left < 0:
                raise SecurityError(
                    f"the template's loops ran more than {MAX_LOOP_ITERATIONS} iterations in "
                    f"one render (nested loops multiply); loop over less data"
                )
            yield item


def count_macro_call() -> None:
    """A {% macro %} call is paid for like a loop iteration: recursion loops without a for."""
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.left -= 1
    if budget.left < 0:
        raise SecurityError(
            f"the template's loops and macro calls ran more than {MAX_LOOP_ITERATIONS} "
            "iterations in one render; loop over less data or recurse less deeply"
        )


def counted(iterable: Iterable[Any]) -> _CountedIterable:
    """What every {% for %} iterates (see guard_loops)."""
    return _CountedIterable(iterable)


def guard_loops(tree: nodes.Template) -> nodes.Template:
    """Make every {% for %} (and recursive loop(...) call) iterate through `counted`."""
    for loop in tree.find_all(nodes.For):
        loop.iter = _counting(loop.iter)
        if loop.recursive:
            for call in loop.find_all(nodes.Call):
                if isinstance(call.node, nodes.Name) and call.node.name == "loop" and call.args:
                    call.args[0] = _counting(call.args[0])
    return tree


def _counting(node: nodes.Expr) -> nodes.Call:
    guard = nodes.EnvironmentAttribute("count_loop", lineno=node.lineno)
    return nodes.Call(guard, [node], [], None, None, lineno=node.lineno)


# --- sizes ------------------------------------------------------------------------


def _refuse(what: str, size: int) -> None:
    if size > MAX_RENDERED_CHARS:
        raise SecurityError(
            f"{what} is too large: it would build {size} characters "
            f"(more than {MAX_RENDERED_CHARS})"
        )


def _length(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return len(str(value))


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``+``, ``*`` and ``%`` whose result would be too large, before computing it."""
    if operator == "+":
        if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _refuse("'+'", len(left) + len(right))
    elif operator == "*":
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                _refuse(f"repeating a sequence of length {len(sequence)} {count} times",
                        len(sequence) * count)  # fmt: skip
    elif operator == "%" and isinstance(left, str):
        check_printf(left, right)


def check_printf(template: str, arguments: Any = ()) -> None:
    """Refuse a printf-style format whose widths and precisions add up to too much."""
    total = len(template)
    for field in _PRINTF_FIELD.finditer(template):
        for part in (field["width"], field["precision"]):
            if part == "*":
                raise SecurityError("a printf field width or precision of '*' is refused")
            if part:
                total += int(part) if len(part) < 10 else MAX_RENDERED_CHARS + 1
    values = arguments.values() if isinstance(arguments, dict) else arguments
    if isinstance(values, tuple | list) or isinstance(arguments, dict):
        total += sum(_length(value) for value in values)
    else:
        total += _length(arguments)
    _refuse("this printf format", total)


def _check_join(items: list[Any], separator: Any) -> None:
    size = sum(len(str(item)) for item in items) + len(str(separator)) * max(len(items) - 1, 0)
    _refuse("join", size)


def _check_replace(text: Any, old: Any, new: Any, count: Any = None) -> None:
    text, old, new = str(text), str(old), str(new)
    occurrences = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    _refuse("replace", len(text) + occurrences * (len(new) - len(old)))


def _check_width(text: Any, width: Any) -> None:
    if isinstance(width, int):
        _refuse(f"padding to width {width}", max(_length(text), width))


def _check_indent(text: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    unit = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    text = str(text)
    _refuse(f"indenting by {width!r}", len(text) + (text.count("\n") + 1) * max(unit, 0))


def _check_wordwrap(text: Any, width: Any = 79, *_: Any, wrapstring: Any = None, **__: Any) -> None:
    if len(_) >= 2 and wrapstring is None:
        wrapstring = _[1]
    separator = len(str(wrapstring)) if wrapstring is not None else 1
    if separator > 1:
        size = len(str(text))
        _refuse("wordwrap", size + (size + 1) * separator)
    # textwrap breaks a long word by slicing off one line at a time: a word of n
    # characters into lines of w costs about n * n / (2 * w) character copies.
    if (_[0] if _ else __.get("break_long_words", True)) and isinstance(width, int):
        longest = max(map(len, str(text).split()), default=0)
        if longest * longest // (2 * max(width, 1)) > _MAX_WRAP_COPIES:
            raise SecurityError(
                f"wordwrap of a {longest}-character word into lines of {width} is refused "
                "(too slow); wrap wider, or pass break_long_words=false"
            )


def _check_json_indent(indent: Any) -> None:
    if (isinstance(indent, int) and indent > _MAX_JSON_INDENT) or (
        isinstance(indent, str) and len(indent) > _MAX_JSON_INDENT
    ):
        raise SecurityError(f"a JSON indent of more than {_MAX_JSON_INDENT} is refused")


def _check_count(name: str, count: Any) -> None:
    if isinstance(count, int) and count > MAX_RANGE:
        raise SecurityError(f"{name} of more than {MAX_RANGE} is refused")


# --- bounded filters -----------------------------------------------------------------


def _wrap(original: Callable[..., Any], check: Callable[..., Any]) -> Callable[..., Any]:
    """`original` with `check(*args, **kwargs)` first; `check` may return new args."""
    pass_arg = getattr(original, "jinja_pass_arg", None)

    def run(args: tuple, kwargs: dict) -> Any:
        replaced = check(*args, **kwargs)
        return original(*(replaced if replaced is not None else args), **kwargs)

    if pass_arg is None:

        def bounded(*args: Any, **kwargs: Any) -> Any:
            return run(args, kwargs)

    else:

        def bounded(first: Any, *args: Any, **kwargs: Any) -> Any:
            replaced = check(*args, **kwargs)
            return original(first, *(replaced if replaced is not None else args), **kwargs)

        bounded.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    bounded.__name__ = getattr(original, "__name__", "filter")
    bounded.__doc__ = original.__doc__
    return bounded


def _join_check(value: Any, *args: Any, **kwargs: Any) -> tuple:
    items = list(value)  # a generator is read once, here, and joined from the list
    separator = args[0] if args else kwargs.get("d", "")
    attribute = args[1] if len(args) > 1 else kwargs.get("attribute")
    if attribute is None:
        _check_join(items, separator)
    else:
        _refuse("join", len(str(separator)) * max(len(items) - 1, 0))
    return (items, *args)


def _format_check(value: Any, *args: Any, **kwargs: Any) -> None:
    check_printf(str(value), kwargs or args)


def _batch_check(value: Any, linecount: Any = 1, fill_with: Any = None, *_: Any) -> None:
    if fill_with is not None:
        _check_count("batch() with fill_with and a size", linecount)


def _slice_check(value: Any, slices: Any = 1, *_: Any, **__: Any) -> None:
    _check_count("slice() into a count", slices)


def _tojson_check(value: Any, indent: Any = None, *_: Any, **__: Any) -> None:
    _check_json_indent(indent)


_FILTER_CHECKS: dict[str, Callable[..., Any]] = {
    "center": lambda value, width=80, *_: _check_width(value, width),
    "indent": _check_indent,
    "format": _format_check,
    "wordwrap": _check_wordwrap,
    "join": _join_check,
    "replace": lambda s, old, new, count=None, *_: _check_replace(s, old, new, count),
    "batch": _batch_check,
    "slice": _slice_check,
    "tojson": _tojson_check,
    "to_json_string": _tojson_check,
}


def bounded_filters(filters: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Size-bounded replacements for those of `filters` that can allocate a lot."""
    return {
        name: _wrap(filters[name], check)
        for name, check in _FILTER_CHECKS.items()
        if name in filters
    }


# --- bounded str / bytes / int methods (called through the sandbox) ----------------

_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def check_method_call(function: Any, args: tuple, kwargs: dict) -> tuple | None:
    """Refuse a str/bytes/int method call that would build too much; may return new args."""
    owner = getattr(function, "__self__", None)
    name = getattr(function, "__name__", "")
    if isinstance(owner, str | bytes | bytearray):
        if name in _PADDING_METHODS and args:
            _check_width(owner, args[0])
        elif name == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            tab = "\t" if isinstance(owner, str) else b"\t"
            if isinstance(size, int):
                _refuse("expandtabs", len(owner) + owner.count(tab) * max(size, 0))
        elif name == "join" and args:
            items = list(args[0])
            _check_join(items, owner)
            return (items, *args[1:])
        elif name == "replace" and len(args) >= 2:
            count = args[2] if len(args) > 2 else kwargs.get("count", -1)
            _check_replace(owner, args[0], args[1], count)
        elif name == "translate" and args and isinstance(args[0], dict):
            longest = max((_length(v) for v in args[0].values() if v is not None), default=1)
            _refuse("translate", len(owner) * max(longest, 1))
        elif name == "format":
            raise SecurityError("str.format is refused")
    elif isinstance(owner, int) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        if isinstance(length, int):
            _refuse("int.to_bytes", length)
    return None


def sized_parts(parts: tuple) -> tuple:
    """The parts of ``a ~ b ~ ...``, refused if their joined text would be too large."""
    _refuse("'~'", sum(len(part) if isinstance(part, str) else len(str(part)) for part in parts))
    return parts


def check_native_size(value: Any) -> None:
    """Refuse a native value standing for more than MAX_NATIVE_CHARS of data (strings
    counted by length, every other item as one), stopping as soon as it is past."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 1
        elif isinstance(item, dict):
            total += 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            total += 1
            stack.extend(item)
        else:
            total += 1
        if total > MAX_NATIVE_CHARS:
            raise SecurityError(
                f"the template's value stands for more than {MAX_NATIVE_CHARS:,} characters "
                "of data (shared parts counted each time they are used); build less"
            )
