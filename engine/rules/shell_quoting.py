"""Where a value may enter a shell command template, and how it is quoted there.

A ``local-shell-cmd`` ``cmd`` is shell source with ``{{ expr }}`` in it. A value is safe
only where this module *knows* how sh will read it: a plain word at the top level of the
command (it becomes one single-quoted word), or inside the author's ``"..."`` or ``'...'``
at the top level (escaped for that quote). Everywhere else — inside ``$(...)``, backticks,
``${...}``, ``$((...))``, a here-document body or delimiter, a comment, directly after a
backslash or ``$``, in the arguments of a command that hands them to another shell
(``sh -c``, ``eval``, ``ssh``, ``su``...), or where the context depends on which
``{% if %}``/``{% for %}`` branch ran — the site is *refused*: rendering a value there
fails, and ``hookyard rule validate`` warns about it.

The decision is made once, when the template compiles, by a conservative lexer run over
the template's literal text as Jinja will emit it (whitespace control applied). Jinja
branches are followed as sets of lexer states (a loop until no new state appears), so a
site is accepted only if every way of reaching it gives the same, known context. Pure:
no I/O; works on a parsed Jinja tree.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes

from engine.rules.shell_lexer import DOUBLE, SINGLE, WORD, ShellLexer

__all__ = [
    "DOUBLE",
    "SINGLE",
    "WORD",
    "ShellSite",
    "Unquoted",
    "env_advice",
    "plan_sites",
    "quote_in_double_quotes",
    "quote_in_single_quotes",
    "quote_word",
]
# Beyond these the template is treated as unknowable rather than followed further.
_MAX_STATES = 64
_MAX_LOOP_PASSES = 12
# Characters times states lexed per template (a few seconds at most, even when hostile).
_MAX_STEPS = 500_000


# --- quoting values ---------------------------------------------------------------


class Unquoted(str):
    """A value the template author explicitly allowed into a shell command unquoted."""

    __slots__ = ()


def quote_word(text: str) -> str:
    """A value standing outside quotes: one shell word, single-quoted."""
    return shlex.quote(text)


def quote_in_double_quotes(text: str) -> str:
    """A value inside the author's "...": the characters sh treats specially there, escaped."""
    return re.sub(r'([\\"$`])', r"\\\1", text)


def quote_in_single_quotes(text: str) -> str:
    """A value inside the author's '...': nothing is special but the closing quote."""
    return text.replace("'", "'\\''")


# --- following a Jinja template ---------------------------------------------------


@dataclass(frozen=True)
class ShellSite:
    """One ``{{ }}`` of a shell command template and the verdict on it."""

    output: nodes.Output
    index: int  # position of the expression in output.nodes
    line: int
    expression: str  # the {{ ... }} source as written
    quoting: str | None  # WORD, DOUBLE or SINGLE; None when refused
    problem: str | None  # why it is refused: the context, as a phrase

    @property
    def node(self) -> nodes.Expr:
        return self.output.nodes[self.index]

    def description(self) -> str:
        """``{{ x }} (template line 2) is inside ...`` for messages."""
        return f"{self.expression} (template line {self.line}) is {self.problem}"


_States = dict[tuple, ShellLexer]


class _Follower:
    def __init__(self) -> None:
        self.verdicts: dict[tuple[int, int], tuple[nodes.Output, int, set]] = {}
        self.steps = 0

    def record(self, output: nodes.Output, index: int, verdict: tuple) -> None:
        entry = self.verdicts.setdefault((id(output), index), (output, index, set()))
        entry[2].add(verdict)

    def body(self, body: list[nodes.Node], states: _States, refusal: str | None) -> _States:
        for node in body:
            states = self.node(node, states, refusal)
        return states

    def node(self, node: nodes.Node, states: _States, refusal: str | None) -> _States:
        if isinstance(node, nodes.Output):
            return self.output(node, states, refusal)
        if isinstance(node, nodes.If):
            branches = [node.body, *(elif_.body for elif_ in node.elif_), node.else_]
            merged: _States = {}
            for branch in branches:
                merged.update(self.body(branch, _copies(states), refusal))
            return _bounded(merged)
        if isinstance(node, nodes.For):
            return self.loop(node, states, refusal)
        if isinstance(node, nodes.With | nodes.Scope | nodes.Block):
            return self.body(node.body, states, refusal)
        if isinstance(node, nodes.Assign | nodes.Import | nodes.FromImport):
            return states
        if isinstance(node, nodes.AssignBlock):
            # Captured into a variable: it reaches the command only through a later {{ }},
            # which is quoted (or refused) where it stands.
            return states
        if isinstance(node, nodes.Macro):
            self.body(node.body, _unknown_states("inside a {% macro %}"), "inside a {% macro %}")
            return states
        reason = {
            nodes.CallBlock: "inside a {% call %} block",
            nodes.FilterBlock: "inside a {% filter %} block",
            nodes.ScopedEvalContextModifier: "inside an {% autoescape %} block",
        }.get(type(node), f"inside a {{% {type(node).__name__.lower()} %}} tag")
        for child in node.find_all(nodes.Output):
            self.output(child, _unknown_states(reason), reason)
        return _unknown_states(f"after a {reason.split(' ', 2)[-1]}")

    def output(self, node: nodes.Output, states: _States, refusal: str | None) -> _States:
        for index, child in enumerate(node.nodes):
            if isinstance(child, nodes.TemplateData):
                self.steps += len(child.data) * len(states)
                if self.steps > _MAX_STEPS:
                    states = _unknown_states("in a shell command too long or branchy to follow")
                states = _fed(states, child.data)
                continue
            if refusal is not None:
                self.record(node, index, (None, refusal))
                continue
            after: _States = {}
            for state in states.values():
                state = state.copy()
                self.record(node, index, state.site())
                after[state.key()] = state
            states = _bounded(after)
        return states

    def loop(self, node: nodes.For, states: _States, refusal: str | None) -> _States:
        result = self.body(node.else_, _copies(states), refusal)
        seen = dict(states)
        current = states
        for _ in range(_MAX_LOOP_PASSES):
            after = self.body(node.body, _copies(current), refusal)
            result.update(after)
            current = {key: state for key, state in after.items() if key not in seen}
            if not current:
                return _bounded(result)
            seen.update(current)
        return _unknown_states("after a {% for %} loop whose quoting keeps changing")


def _copies(states: _States) -> _States:
    return {key: state.copy() for key, state in states.items()}


def _fed(states: _States, text: str) -> _States:
    after: _States = {}
    for state in states.values():
        state = state.copy()
        state.feed(text)
        after[state.key()] = state
    return _bounded(after)


def _bounded(states: _States) -> _States:
    if len(states) <= _MAX_STATES:
        return states
    return _unknown_states("after more {% if %}/{% for %} combinations than can be followed")


def _unknown_states(reason: str) -> _States:
    state = ShellLexer()
    state.give_up(reason)
    return {state.key(): state}


def _expression_sources(tree: nodes.Template) -> Iterator[tuple[nodes.Output, int]]:
    for output in tree.find_all(nodes.Output):
        for index, child in enumerate(output.nodes):
            if not isinstance(child, nodes.TemplateData):
                yield output, index


def _variable_texts(tokens: Any) -> list[tuple[int, str]]:
    texts: list[tuple[int, str]] = []
    parts: list[str] | None = None
    line = 1
    for lineno, kind, value in tokens:
        if kind == "variable_begin":
            parts, line = [value], lineno
        elif parts is not None:
            parts.append(value)
            if kind == "variable_end":
                texts.append((line, "".join(parts)))
                parts = None
    return texts


def plan_sites(tree: nodes.Template, tokens: Any) -> list[ShellSite]:
    """A verdict for every value-inserting ``{{ }}`` of a parsed shell command template.

    `tokens` are the template's raw tokens (``environment.lexer.tokeniter``), used only to
    quote each ``{{ }}`` as written in messages.
    """
    follower = _Follower()
    start = ShellLexer()
    ends = follower.body(tree.body, {start.key(): start}, None)
    # A pipeline into a program that runs its input (`echo {{ x }} | sh`) is seen only after
    # the values upstream of it: decided over the whole template, every value refused.
    # (The end of the text ends its last word, as a newline would.)
    fed = sorted({state.feeds_code for state in _fed(ends, "\n").values() if state.feeds_code})
    order = list(_expression_sources(tree))
    texts = _variable_texts(tokens)
    if len(texts) != len(order):  # never expected; messages then show less
        texts = [
            (getattr(output.nodes[index], "lineno", 1), "{{ ... }}") for output, index in order
        ]
    sites = []
    for (output, index), (line, text) in zip(order, texts, strict=True):
        entry = follower.verdicts.get((id(output), index))
        if entry is None:
            continue  # inside {% set %}...{% endset %}: not inserted where it stands
        verdicts = entry[2]
        problems = sorted(problem for _, problem in verdicts if problem is not None)
        quotings = {quoting for quoting, _ in verdicts}
        if problems:
            quoting, problem = None, problems[0]
        elif len(quotings) != 1:
            quoting, problem = (
                None,
                (
                    "where the quoting differs between {% if %}/{% for %} branches (a quote "
                    "opened in one branch and closed elsewhere)"
                ),
            )
        else:
            quoting, problem = quotings.pop(), None
        if fed and problem is None:
            quoting, problem = (
                None,
                f"in a command line that pipes into {fed[0]}, which runs what it reads as code",
            )
        sites.append(ShellSite(output, index, line, text, quoting, problem))
    return sites


def env_advice(site: ShellSite) -> str:
    """How to pass the value of `site` safely: through the action's env parameter."""
    name = _variable_name(site.node)
    inner = site.expression.strip()
    return (
        f"pass the value through the action's env parameter instead "
        f'(env: {{{name}: "{inner}"}}) and write "${name}" in the command'
    )


def _variable_name(node: nodes.Node) -> str:
    while isinstance(node, nodes.Filter | nodes.Test) and node.node is not None:
        node = node.node
    name = ""
    if isinstance(node, nodes.Getattr):
        name = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        name = str(node.arg.value)
    elif isinstance(node, nodes.Name):
        name = node.name
    name = re.sub(r"[^A-Za-z0-9_]", "_", name).upper().strip("_")
    return name if name and not name[0].isdigit() else "VALUE"
