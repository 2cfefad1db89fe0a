"""Issue 15 item 8: templates cannot allocate or loop without bound, at load or at render.

Memory is measured with tracemalloc: a bound that holds refuses *before* building the
result, so the peak stays small; without it the interpreter allocates the result first.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest

from engine.errors import SandboxViolation, TemplateError
from engine.rules import load_rule
from engine.rules.template_limits import MAX_LOOP_ITERATIONS
from engine.rules.templates import compile_template, render_shell_command

# Far below any of the bombs here (they would allocate 100 MB to many GB).
PEAK_LIMIT = 40 * 1024 * 1024


def peak_bytes(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        try:
            run()
        except TemplateError:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def render(source: str, context: dict | None = None) -> object:
    return compile_template(source).render(context or {})


def rule_with(parameters: dict, criteria: dict | None = None) -> dict:
    return {
        "name": "bomb",
        "pack": "t",
        "trigger": {"type": "core.st2.webhook", "parameters": {"url": "h"}},
        "criteria": criteria or {},
        "action": {"ref": "core.local", "parameters": parameters},
    }


# --- load: nothing is evaluated while compiling ---------------------------------------

CONSTANT_BOMBS = [
    "{{ 'x'|center(999999999) }}",
    "{{ 'x'|center(400000000) ~ 'y' }}",
    "{{ 'a\nb'|indent(999999999) }}",
    "{{ '%999999999s'|format('x') }}",
    "{{ [1]|batch(999999999, 0)|list }}",
    "{{ 'x'|center(999999999) if true else '' }}",
]


@pytest.mark.parametrize("source", CONSTANT_BOMBS)
def test_loading_a_rule_never_computes_its_templates(source):
    rule = rule_with({"msg": source, "cmd": f"echo {source}"}, {"trigger.body.a": {
        "type": "equals", "pattern": source}})  # fmt: skip
    assert peak_bytes(lambda: load_rule(rule)) < PEAK_LIMIT
    loaded = load_rule(rule)
    with pytest.raises(SandboxViolation, match=r"too large|refused"):
        compile_template(source).render({})
    assert loaded.action_parameters["msg"] == source


def test_a_constant_bomb_in_a_shell_command_is_refused_at_render_not_load():
    source = "echo {{ 'x'|center(999999999) }}"
    assert peak_bytes(lambda: compile_template(source, True)) < PEAK_LIMIT
    with pytest.raises(SandboxViolation, match="too large"):
        render_shell_command(source, {})


# --- render: sized before built -----------------------------------------------------

RENDER_BOMBS = [
    "{{ 'x'|center(999999999) }}",
    "{{ 'x'.center(999999999) }}",
    "{{ 'x'.ljust(999999999) }}",
    "{{ 'x'.rjust(999999999) }}",
    "{{ '1'.zfill(999999999) }}",
    "{{ ('\t' * 1000).expandtabs(1000000) }}",
    "{{ 'a\nb\nc'|indent(999999999) }}",
    "{{ ('a\n' * 100000)|indent('x' * 1000) }}",
    "{{ '%999999999s'|format('x') }}",
    "{{ '%(a)999999999s' % {'a': 1} }}",
    "{{ '%500000s%500000s%500000s' % (1, 2, 3) }}",
    "{{ '%.999999999f' % 1.5 }}",
    "{{ ('ab ' * 300000)|wordwrap(1, wrapstring='x' * 100) }}",
    "{{ range(100000)|join('x' * 100) }}",
    "{{ range(100000)|map('string')|join(d='x' * 100) }}",
    "{{ ('x' * 1000).join(range(10000)|map('string')) }}",
    "{{ ('x' * 1000000)|replace('x', 'yy') }}",
    "{{ 'ab'.replace('', 'x' * 1000000) }}",
    "{{ ('x' * 1000).translate({120: 'y' * 10000}) }}",
    "{{ ('x' * 100000)|regex_replace('', 'y' * 1000) }}",
    "{{ ('x' * 100000)|regex_replace('(x)', '\\\\1' * 100) }}",
    "{{ [1]|batch(999999999, 0)|list }}",
    "{{ [1]|slice(999999999)|list }}",
    "{{ {'a': [1, [2]]}|tojson(999999999) }}",
    "{{ {'a': [1, [2]]}|to_json_string(999999999) }}",
    "{{ (1).to_bytes(999999999, 'big') }}",
    "{{ ('x' * 1000000) + ('x' * 1000000) }}",
    "{{ ('x' * 1000000) ~ ('x' * 1000000) }}",
    "{% set ns = namespace(a='x') %}{% for i in range(64) %}{% set ns.a = ns.a ~ ns.a %}"
    "{% endfor %}{{ ns.a|length }}",
    "{% set ns = namespace(a='x') %}{% for i in range(64) %}{% set ns.a = ns.a + ns.a %}"
    "{% endfor %}{{ ns.a|length }}",
    "{% set ns = namespace(a=[1]) %}{% for i in range(64) %}{% set ns.a = ns.a + ns.a %}"
    "{% endfor %}{{ ns.a|length }}",
]


@pytest.mark.parametrize("source", RENDER_BOMBS)
def test_size_bombs_are_refused_before_they_allocate(source):
    with pytest.raises(SandboxViolation, match=r"too large|is refused"):
        render(source)
    assert peak_bytes(lambda: render(source)) < PEAK_LIMIT


@pytest.mark.parametrize(
    "source",
    [
        "{{ ('x' * 1000000)|wordwrap(1) }}",  # textwrap slices a long word per line: ~45 s
        "{{ ('x' * 1000000)|wordwrap(2, true) }}",
        "{{ ('x' * 1000000)|wordwrap(width=3, break_long_words=true) }}",
    ],
)
def test_wordwrap_of_a_long_word_into_narrow_lines_is_refused(source):
    with pytest.raises(SandboxViolation, match="wordwrap"):
        render(source)


def test_wordwrap_of_long_words_runs_where_it_is_cheap():
    assert render("{{ ('x' * 1000000)|wordwrap(1, false)|length }}") == 1000000
    assert render("{{ ('x' * 100000)|wordwrap(79)|length }}") > 100000


def test_ordinary_uses_of_the_bounded_operations_still_work():
    assert render("{{ 'ab'|center(6) }}") == "  ab  "
    assert render("{{ 'ab'.ljust(4) ~ '|' ~ 'ab'.rjust(4) ~ '|' ~ '7'.zfill(3) }}") == (
        "ab  |  ab|007"
    )
    assert render("{{ 'a\nb'|indent(2, first=true) }}") == "  a\n  b"
    assert render("{{ '%-4s|%05.1f' % ('a', 2.5) }} {{ '%(k)s' % {'k': 1} }}") == "a   |002.5 1"
    assert render("{{ '%s-%s'|format('a', 1) }}") == "a-1"
    assert render("{{ 'a b c d'|wordwrap(3, wrapstring='|') }}") == "a b|c d"
    assert render("{{ [1, 2, 3]|join(', ') }} {{ ', '.join(['x', 'y']) }}") == "1, 2, 3 x, y"
    assert render("{{ [{'n': 'a'}, {'n': 'b'}]|join(d='+', attribute='n') }}") == "a+b"
    assert render("{{ range(3)|map('string')|join }}") == "012"
    assert render("{{ 'aXbX'|replace('X', '-') }} {{ 'aXbX'.replace('X', '', 1) }}") == ("a-b- abX")
    assert render("{{ [1, 2, 3]|batch(2, 0)|list }}") == [[1, 2], [3, 0]]
    assert render("{{ [1, 2, 3]|slice(2)|list }}") == [[1, 2], [3]]
    assert render("{{ {'a': 1}|tojson(2) }}") == '{\n  "a": 1\n}'
    assert render("{{ 'a' ~ 1 ~ none }}") == "a1None"
    assert render("{{ [1] + [2] }} {{ 'a' + 'b' }} {{ 1 + 2 }}") == "[1, 2] ab 3"
    assert render("{{ 'ab'.translate({97: 'xy'}) }}") == "xyb"
    assert render("{{ 'a-b'|regex_replace('(\\\\w)', '<\\\\1>') }}") == "<a>-<b>"


# --- loops ------------------------------------------------------------------------


def test_nested_loops_stop_at_the_iteration_budget():
    source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(SandboxViolation, match=f"more than {MAX_LOOP_ITERATIONS} iterations"):
        render(source)


def test_the_first_match_of_a_rule_with_nested_loops_fails_instead_of_hanging():
    rule = load_rule(
        rule_with(
            {},
            {
                "trigger.body.a": {
                    "type": "equals",
                    "pattern": "{% for i in range(100000) %}{% for j in range(100000) %}"
                    "{% endfor %}{% endfor %}",
                }
            },
        )
    )
    evaluation = rule.evaluate({"body": {"a": ""}})
    assert not evaluation.matched
    assert "iterations" in evaluation.trace[0].reason


def test_recursive_loops_count_too():
    source = (
        "{% for x in range(1000) recursive %}{% if loop.depth < 3 %}{{ loop(range(1000)) }}"
        "{% endif %}{% endfor %}"
    )
    with pytest.raises(SandboxViolation, match="iterations"):
        render(source)


def test_recursive_macro_calls_count_too():
    # No {% for %} at all: 2**40 macro calls spun past any loop budget.
    source = (
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}"
    )
    with pytest.raises(SandboxViolation, match="iterations"):
        render(source)


def test_ordinary_macros_still_work():
    source = "{% macro greet(name) %}hi {{ name }}{% endmacro %}{{ greet('a') }}, {{ greet('b') }}"
    assert render(source) == "hi a, hi b"


def test_the_budget_is_per_render_and_covers_all_loops_of_it():
    half = "{% for i in range(100000) %}{% endfor %}"
    template = compile_template(half + half)
    assert template.render({}) == ""
    assert template.render({}) == ""  # a fresh budget each render
    with pytest.raises(SandboxViolation, match="iterations"):
        render(half + half + "{% for k in range(10) %}{% endfor %}")


def test_loops_keep_their_loop_variables():
    source = (
        "{% for x in items %}{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last else '' }}"
        "{% else %}empty{% endfor %}|{% for k, v in d.items() %}{{ k }}={{ v }}{% endfor %}"
        "|{% for x in items if x > 1 %}{{ x }}{% endfor %}"
    )
    assert render(source, {"items": [1, 2, 3], "d": {"a": 1}}) == "1/3,2/3,3/3|a=1|23"
    assert render(source, {"items": [], "d": {}}) == "empty||"
    tree = "{% for n in nodes recursive %}{{ n.name }}{{ loop(n.kids) }}{% endfor %}"
    nodes = [{"name": "a", "kids": [{"name": "b", "kids": []}]}]
    assert render(tree, {"nodes": nodes}) == "ab"


@pytest.mark.parametrize(
    ("source", "context"),
    [
        # Each step is within the sequence bound; together a 100 MB value, one string
        # shared 100 times, which the rules worker would then encode as 100 MB of JSON.
        ("{{ ['x' * 1000000] * 100 }}", {}),
        # An alias-expanded YAML value: a few KB of payload standing for 45 MB.
        (
            "{{ y | from_yaml_string }}",
            {"y": "a: &a " + "x" * 5000 + "\nb: [" + ", ".join(["*a"] * 9000) + "]"},
        ),
    ],
)
def test_a_native_value_standing_for_too_much_data_is_refused(source, context):
    with pytest.raises(TemplateError, match="stands for more than"):
        compile_template(source).render(context)


def test_a_native_value_of_ordinary_size_is_kept():
    value = compile_template("{{ ['x' * 1000] * 100 }}").render({})
    assert value == ["x" * 1000] * 100
