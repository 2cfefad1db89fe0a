"""engine.workflows.expressions: YAQL and Jinja in workflows, each function, every bound."""

from __future__ import annotations

import dataclasses
import subprocess
import time

import pytest

from engine.errors import WorkflowExpressionError
from engine.rules.parameter_kinds import SHELL_COMMAND, URL
from engine.workflows import yaql_engine
from engine.workflows.expressions import (
    ExpressionContext,
    ctx_names_read,
    evaluate,
    evaluate_parameter,
    expression_problems,
)
from engine.workflows.functions import to_human_time_from_seconds

KV = {"system.k": "plain", "system.secret": "decrypted"}


def _lookup(key: str, decrypt: bool) -> str:
    if key == "system.secret" and not decrypt:
        return "ciphertext"
    return KV[key]


SCOPE = ExpressionContext(
    ctx={
        "x": 1,
        "names": ["a", "b", "c"],
        "d": {"a": {"b": 2}, "items": [9]},
        "nothing": None,
        "hostile": "<% ctx(x) %>{{ ctx('x') }}",
        "__internal": "hidden",
    },
    tasks={
        "t0": {"status": "failed", "result": {"stderr": "boom"}},
        "fan": {"status": "succeeded", "result": {"items": [{"result": 1}, {"result": 2}]}},
    },
    current_task="t1",
    current_result={"stdout": "hi", "n": 3},
    current_status="succeeded",
    item={"host": "h1", "port": 22},
    st2kv=_lookup,
)


def value(text: str, scope: ExpressionContext = SCOPE):
    return evaluate(text, scope)


def error(text: str, scope: ExpressionContext = SCOPE) -> str:
    with pytest.raises(WorkflowExpressionError) as caught:
        evaluate(text, scope)
    return str(caught.value)


BOTH = [("<% {} %>", "yaql"), ("{{{{ {} }}}}", "jinja")]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("ctx('x')", 1),
        ("ctx('names')", ["a", "b", "c"]),
        ("ctx().d.a.b", 2),
        ("result().stdout", "hi"),
        ("succeeded()", True),
        ("failed()", False),
        ("completed()", True),
        ("task_status('t0')", "failed"),
        ("task_status('never')", "unset"),
        ("task_status('t1')", "succeeded"),
        ("task('t0').result.stderr", "boom"),
        ("task('fan').result['items'][1]['result']", 2),
        ("item()", {"host": "h1", "port": 22}),
        ("item('host')", "h1"),
        ("st2kv('system.k')", "plain"),
        ("json('{\"a\": [1]}')", {"a": [1]}),
        ("zip(ctx('names'), [1, 2])", [["a", 1], ["b", 2], ["c", None]]),
        ("to_json_string(ctx().d.a)", '{"b": 2}'),
        ("from_json_string('[1, 2]')", [1, 2]),
        ("to_yaml_string(ctx().d.a)", "b: 2\n"),
        ("from_yaml_string('a: [1]')", {"a": [1]}),
        ("json_escape('a \"b\" c')", 'a \\"b\\" c'),
        ("regex_match('abc', 'a.')", True),
        ("regex_search('xabc', '^b')", False),
        ("regex_replace('a-b-c', '-', '+')", "a+b+c"),
        ("regex_substring('v1.2 v3.4', 'v([0-9])', 1)", "3"),
        # StackStorm keeps the marker in a workflow's data (st2's integration tests expect it
        # in an output); a task's input turns it into None (test_workflow_conductor).
        ("use_none(ctx('nothing'))", "%*****__%NONE%__*****%"),
        ("to_human_time_from_seconds(3785)", "1h3m5s"),
        ("version_compare('1.2.3', '1.10.0')", -1),
        ("version_more_than('2.0.0', '1.9.9')", True),
        ("version_less_than('1.0.0-rc.1', '1.0.0')", True),
        ("version_equal('1.0.0', '1.0.0')", True),
        ("version_match('1.4.0', '>=1.2.0')", True),
        ("version_bump_major('1.2.3')", "2.0.0"),
        ("version_bump_minor('1.2.3')", "1.3.0"),
        ("version_bump_patch('1.2.3')", "1.2.4"),
        ("version_strip_patch('1.2.3')", "1.2"),
        ("jsonpath_query(ctx().d, '$.a.b')", [2]),
        ("jsonpath_query(ctx().d, '$..b')", [2]),
        ("jsonpath_query(ctx().d, '$.items[*]')", [9]),
        ("jsonpath_query(ctx().d, '$.nope')", None),
        ("basename('/a/b.txt')", "b.txt"),
        ("dirname('/a/b.txt')", "/a"),
    ],
)
@pytest.mark.parametrize(("form", "language"), BOTH)
def test_every_function_in_both_languages(form, language, expression, expected):
    if language == "yaql" and "[" in expression and "][" in expression:
        expression = expression.replace("['items'][1]['result']", ".items[1].result")
    assert value(form.format(expression)) == expected


def test_language_specific_call_forms():
    assert value("<% ctx(x) %>") == 1  # YAQL reads a bare name as a string
    assert value("<% st2kv('system.secret', decrypt => true) %>") == "decrypted"
    assert value("{{ st2kv('system.secret', decrypt=true) }}") == "decrypted"
    assert value("<% st2kv('system.nope', default => 'dflt') %>") == "dflt"
    assert value("{{ st2kv('system.nope', default=None) }}") is None
    assert value("<% zip(list(1), list(2, 3), pad => 0) %>") == [[1, 2], [0, 3]]
    assert value("{{ ctx().d | to_json_string }}") == '{"a": {"b": 2},"items": [9]}'
    assert value("<% ctx().names.select($ + '!') %>") == ["a!", "b!", "c!"]
    assert value("<% ctx() %>")["x"] == 1 and "__internal" not in value("<% ctx() %>")


def test_one_expression_is_native_and_text_renders_to_str():
    assert value("<% ctx(names) %>") == ["a", "b", "c"]
    assert value("  {{ ctx('x') }}  ") == 1
    assert value("n=<% ctx(x) %>, d=<% ctx(d).a %>") == "n=1, d={'b': 2}"
    assert value("n={{ ctx('x') }}") == "n=1"
    assert value("plain") == "plain"
    assert value({"<% ctx(names)[0] %>": ["{{ item('port') }}", 3, None]}) == {"a": [22, 3, None]}
    assert value("a<% use_none(ctx(nothing)) %>b") == "ab"


def test_a_value_that_looks_like_an_expression_is_never_evaluated():
    assert value("<% ctx(hostile) %>") == "<% ctx(x) %>{{ ctx('x') }}"
    assert value("{{ ctx('hostile') }}") == "<% ctx(x) %>{{ ctx('x') }}"
    assert value("x <% ctx(hostile) %>") == "x <% ctx(x) %>{{ ctx('x') }}"
    scope = ExpressionContext(current_task="t", current_result="{{ lipsum(10**6) }}")
    assert value("{{ result() }}", scope) == "{{ lipsum(10**6) }}"


def test_errors_name_the_expression_and_the_cause():
    assert error("<% ctx(missing) %>") == (
        "YaqlEvaluationException: Unable to evaluate expression '<% ctx(missing) %>'. "
        'ExpressionEvaluationException: Variable "missing" is referenced before assignment.'
    )
    assert error("{{ ctx('missing') }}") == (
        "JinjaEvaluationException: Unable to evaluate expression '{{ ctx('missing') }}'. "
        'ExpressionEvaluationException: Variable "missing" is referenced before '
        "assignment."
    )
    assert error("<% ctx('__internal') %>").endswith(
        '"__internal" is referenced before assignment.'
    )
    assert error("<% ctx().d.nope %>") == (
        "YaqlEvaluationException: Unable to resolve key 'nope' in expression "
        "'<% ctx().d.nope %>' from context."
    )
    assert 'Unknown function "nope"' in error("<% nope() %>")
    assert (
        error("<% 1 + %>")
        == "YAQL syntax error in <% 1 + %>: Parse error: unexpected end of statement"
    )
    assert "is never closed" in error("<% ctx(x)")
    assert error("<% result() %>", ExpressionContext()) == (
        "YaqlEvaluationException: Unable to evaluate expression '<% result() %>'. "
        "ExpressionEvaluationException: result() is only available where a task has run "
        "(in next, retry or publish)"
    )
    assert "item() is only available in a with-items task" in error(
        "{{ item() }}", ExpressionContext()
    )
    assert error("<% st2kv('system.nope') %>").endswith(
        'The key "nope" does not exist in the StackStorm datastore.'
    )
    assert error("{{ st2kv('mine') }}").endswith(
        'The key "mine" does not exist in the StackStorm datastore.'
    )
    as_stanley = dataclasses.replace(SCOPE, ctx={"st2": {"user": "stanley"}})
    assert error("<% st2kv('mine') %>", as_stanley).endswith(
        'The key "stanley:mine" does not exist in the StackStorm datastore.'
    )
    assert "no datastore" in error("<% st2kv('system.k') %>", ExpressionContext())
    assert 'Unable to find task execution for "ghost".' in error("<% task(ghost) %>")
    assert "unsafe attribute '__class__'" in error("{{ ctx().__class__ }}")


@pytest.mark.parametrize(
    ("expression", "cause"),
    [
        ("<% range(10000000) %>", "range() of more than 100,000 items is refused"),
        ("<% sequence().len() %>", "sequence() of more than 100,000 items is refused"),
        ("<% cycle(list(1)).len() %>", "cycle() of more than 100,000 items is refused"),
        ("<% repeat(1).len() %>", "repeat() of more than 100,000 items is refused"),
        (
            "<% range(60000).toList() + range(60000).toList() %>",
            "a collection of more than 100,000 items is refused",
        ),
        ("<% 'x' * 100000000 %>", "larger than 16,777,216 bytes is refused"),
        ("<% pow(3, 10000000) %>", "pow(3, 10000000) is too large"),
        ("<% range(10000).selectMany(range(10000)).len() %>", "ran longer than"),
        ("{{ 'x' * 100000000 }}", "too large"),
        ("{% for i in range(10**7) %}{% endfor %}", "range() of more than"),
        ("<% regex_match(concat('a' * 40, '!'), '^(a|aa)+$') %>", "ran longer"),
        ("<% to_json_string(ctx(x), 100000) %>", "an indent of more than 64 is refused"),
        ("<% from_yaml_string('a: &a [1]') %>", "list"),
    ],
)
def test_a_huge_or_endless_evaluation_is_refused_within_a_bound(monkeypatch, expression, cause):
    if cause == "ran longer than":
        # Only the work limit is shortened: other refusals must come from their own bound,
        # whatever the machine's load.
        monkeypatch.setattr(yaql_engine, "MAX_SECONDS", 0.5)
    started = time.monotonic()
    if cause == "list":
        bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"a{i}: &a{i} [{', '.join(['*a' if i == 1 else f'*a{i - 1}'] * 9)}]\n"
            for i in range(1, 9)
        )
        scope = ExpressionContext(ctx={"doc": bomb})
        message = error("<% from_yaml_string(ctx(doc)) %>", scope)
        assert "alias bomb" in message
    else:
        assert cause in error(expression)
    assert time.monotonic() - started < 3


def test_the_time_limit_does_not_leave_a_profiler_behind():
    import sys

    before = sys.getprofile()
    value("<% ctx(names).select($ + 'x') %>")
    assert sys.getprofile() is before


def test_expression_problems_quote_every_bad_expression():
    problems = expression_problems(
        {
            "ok": "<% ctx(x) %> and {{ ctx('x') }}",
            "list": ["<% 1 + %>", "{{ a( }}"],
            "nested": "<% <% succeeded() %>",
            "open": "<% ctx(x) %> <% ctx(",
        }
    )
    assert problems == [
        "YAQL syntax error in <% 1 + %>: Parse error: unexpected end of statement",
        "Jinja template syntax error on line 1: unexpected '}', expected ')' in '{{ a( }}'",
        "YAQL syntax error in <% <% succeeded() %>: <% inside <%",
        "the expression opened with <% in '<% ctx(x) %> <% ctx(' is never closed with %>",
    ]


def test_ctx_names_read_finds_every_form():
    assert ctx_names_read(
        [
            "<% ctx(a) + ctx('b') + ctx(\"c\") + ctx().d.sub + ctx()['e'] %>",
            '{{ ctx("f") }}{% for x in ctx().g %}{% endfor %}',
            "ctx(not_an_expression)",
            {"<% ctx(key) %>": "<% ctx().names.select($) %>"},
        ]
    ) == {"a", "b", "c", "d", "e", "f", "g", "key", "names"}


def test_human_time_forms():
    assert to_human_time_from_seconds(0) == "0s"
    assert to_human_time_from_seconds(59) == "59s"
    assert to_human_time_from_seconds(90061) == "1d1h1m1s"
    assert to_human_time_from_seconds(None) is None


BIG = ExpressionContext(ctx={"s": "x" * 1_000_000})


@pytest.mark.parametrize(
    ("expression", "cause"),
    [
        # One string referenced many times: refused before anything writes it out.
        ("<% range(100).select(ctx(s)).join('') %>", "join() would build more than"),
        ("<% ctx(s).replace('x', 'yyyyyyyyyyyyyyyyyyyy') %>", "replace() would build more than"),
        ("<% range(100).select(ctx(s)) %>", "a value of more than 16,777,216 characters"),
        ("<% to_json_string(range(20).select(ctx(s))) %>", "a value of more than 16,777,216"),
        ("{{ to_json_string([ctx('s')] * 20) }}", "a value of more than 16,777,216"),
        # Many new strings: the process may not grow by more than the bound.
        ("<% range(100000).select('x' * 10000000).toList().len() %>", "used more than 256 MiB"),
    ],
)
def test_values_that_would_be_huge_once_written_out_are_refused(expression, cause):
    started = time.monotonic()
    assert cause in error(expression, BIG)
    assert time.monotonic() - started < 3


def test_lazy_sequences_reach_functions_as_lists():
    assert value("<% to_json_string(range(3).select($ * 2)) %>") == "[0,2,4]"
    assert value("<% zip(range(2), ctx(names).where($ != 'b')) %>") == [[0, "a"], [1, "c"]]
    assert value("<% list(1, 2).join(',') %> <% ','.join(list(3)) %>") == "1,2 3"


def test_results_are_json_data():
    assert value("<% datetime(2020, 1, 2) %>") == "2020-01-02 00:00:00+00:00"
    assert value("<% list(timespan(days => 1)) %>") == ["1 day, 0:00:00"]
    assert value("<% now() > datetime(2020, 1, 1) %>") is True
    assert value("<% set(1, 2) %>") == [1, 2]


# --- task input for shell commands and URLs: values stay data -------------------------

HOSTILE = ExpressionContext(ctx={"msg": "x; id $(whoami) `uname`", "q": "a b&c=d/e"})


@pytest.mark.parametrize(
    "source",
    [
        "echo <% ctx().msg %>",
        "echo {{ ctx('msg') }}",
        "echo '<% ctx().msg %>'",
        'echo "<% ctx(msg) %>"',
    ],
)
def test_a_shell_command_quotes_what_its_expressions_insert(source: str) -> None:
    rendered = evaluate_parameter(source, HOSTILE, SHELL_COMMAND, "cmd")
    # A real shell prints exactly the value: nothing in it ran.
    ran = subprocess.run(["/bin/sh", "-c", rendered], capture_output=True, text=True, timeout=10)
    assert ran.stdout == "x; id $(whoami) `uname`\n" and ran.returncode == 0


def test_a_shell_command_inserts_a_value_as_orquesta_writes_it_in_text() -> None:
    # StackStorm's orquesta-test-yaql-task-functions echoes ctx(loop) = False and expects
    # the task's stdout "False" (Python's str(), as in any other text).
    scope = ExpressionContext(ctx={"loop": False, "n": 3, "names": ["a b"]})
    source = 'echo "<% ctx("loop") %>" <% ctx(n) %> <% ctx(names) %>'
    rendered = evaluate_parameter(source, scope, SHELL_COMMAND, "cmd")
    ran = subprocess.run(["/bin/sh", "-c", rendered], capture_output=True, text=True, timeout=10)
    assert ran.stdout == "False 3 ['a b']\n"


def test_a_url_encodes_what_its_expressions_insert() -> None:
    rendered = evaluate_parameter("https://example.com/s?q=<% ctx().q %>", HOSTILE, URL, "url")
    assert rendered == "https://example.com/s?q=a%20b%26c%3Dd%2Fe"


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("<% ctx().msg %>", "command name"),
        ("sh -c <% ctx().msg %>", "arguments of sh"),
        ("echo {% if true %}<% ctx().msg %>{% endif %}", "Jinja statements"),
    ],
)
def test_a_value_that_would_choose_what_runs_is_refused(source: str, words: str) -> None:
    with pytest.raises(WorkflowExpressionError) as refused:
        evaluate_parameter(source, HOSTILE, SHELL_COMMAND, "cmd")
    assert words in str(refused.value) and "input 'cmd'" in str(refused.value)
    assert "hookyard_value" not in str(refused.value)  # the author's expression is shown


def test_other_parameters_render_as_before() -> None:
    assert evaluate_parameter("echo <% ctx().msg %>", HOSTILE, None, "message") == (
        "echo x; id $(whoami) `uname`"
    )


def test_a_route_must_be_an_integer() -> None:
    assert error("<% task(t0, route=>'one') %>").endswith(
        "task(t0): route must be an integer, got 'one'"
    )
    assert error("{{ task_status('t0', route=true) }}").endswith(
        "task_status(t0): route must be an integer, got True"
    )
    assert value("<% task_status(t0, route=>3) %>") == "unset"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        # st2tests/integration/orquesta/test_wiring_error_handling.py and
        # test_wiring_functions_task.py, word for word.
        (
            "<% abs(8).value %>",
            "YaqlEvaluationException: Unable to evaluate expression '<% abs(8).value %>'. "
            'NoFunctionRegisteredException: Unknown function "#property#value"',
        ),
        (
            "<% succeeded() and result().value %>",
            "YaqlEvaluationException: Unable to resolve key 'value' in expression "
            "'<% succeeded() and result().value %>' from context.",
        ),
        (
            '<% task("task0") %>',
            "YaqlEvaluationException: Unable to evaluate expression '<% task(\"task0\") %>'. "
            'ExpressionEvaluationException: Unable to find task execution for "task0".',
        ),
        (
            '{{ task("task0") }}',
            "JinjaEvaluationException: Unable to evaluate expression '{{ task(\"task0\") }}'. "
            'ExpressionEvaluationException: Unable to find task execution for "task0".',
        ),
    ],
)
def test_evaluation_errors_read_as_stackstorms(expression: str, message: str) -> None:
    assert error(expression) == message


def test_the_yaql_root_is_the_workflows_variables_as_in_orquesta() -> None:
    # StackStorm's orquesta-test-pause-resume and orquesta-test-cancel read `<% $.tempfile %>`.
    assert evaluate("<% $.x %>", SCOPE) == 1
    assert evaluate("<% $.d.a.b + $.x %>", SCOPE) == 3
    assert evaluate("<% $.names.select($.toUpper()) %>", SCOPE) == ["A", "B", "C"]
    assert evaluate("<% let(y => 2) -> $y + $.x %>", SCOPE) == 3
    assert evaluate("<% ctx(x) %>", SCOPE) == 1
