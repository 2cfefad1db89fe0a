"""Tests for engine.rules.templates: typed rendering, StackStorm filters, the sandbox."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from engine.errors import RegistryError, SandboxViolation, TemplateError
from engine.rules.templates import (
    MAX_RENDERED_CHARS,
    compile_template,
    is_template,
    register_filter,
    render_value,
)

PAYLOAD: dict[str, Any] = {
    "count": 5,
    "ratio": 0.5,
    "items": [1, 2, 3],
    "flag": True,
    "off": False,
    "nothing": None,
    "object": {"id": "obj-1", "tags": ["a", "b"]},
    "name": "hook",
    "path": "/var/log/app.log",
    "injected": "{{ 7*7 }}",
    "block": "{% for i in range(3) %}x{% endfor %}",
    "json": '{"a": [1, 2]}',
    "yaml": "a: 1\nb: [x, y]\n",
    "people": [{"name": "ann", "age": 31}, {"name": "bob", "age": 17}],
}
CONTEXT: dict[str, Any] = {
    "trigger": {"body": PAYLOAD, "headers": {"X-Custom-Header": "v1"}},
    "rule": {"name": "r1", "pack": "default"},
    "action_context": {"user": "stanley"},
}


def render(source: str, context: dict[str, Any] = CONTEXT) -> Any:
    return compile_template(source).render(context)


# --- detection and compilation -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{{ x }}", True),
        ("{% if x %}y{% endif %}", True),
        ("a {{x}} b", True),
        ("plain", False),
        ("{ x }", False),
        ("{# comment #}", False),
        ("", False),
    ],
)
def test_is_template(value: str, expected: bool) -> None:
    assert is_template(value) is expected


@pytest.mark.parametrize(
    ("source", "native"),
    [
        ("{{ trigger.body.count }}", True),
        ("  {{ trigger.body.count }}\n", True),
        ("{{- trigger.body.count -}}", True),
        ('{{ "}}" }}', True),
        ("n={{ trigger.body.count }}", False),
        ("{{ trigger.body.count }}{{ trigger.body.count }}", False),
        ("{{ trigger.body.count }} {{ trigger.body.count }}", False),
        ("{{ trigger.body.count }}{# note #}", False),
        ("{% if true %}{{ 1 }}{% endif %}", False),
    ],
)
def test_native_is_exactly_one_expression(source: str, native: bool) -> None:
    assert compile_template(source).native is native
    assert compile_template(source).source == source


def test_compile_is_cached() -> None:
    source = "{{ trigger.body.count + 1 }}"
    assert compile_template(source) is compile_template(source)
    assert compile_template(source) is not compile_template(source + " ")


@pytest.mark.parametrize(
    ("source", "line", "problem"),
    [
        ("{{ x }", 1, "unexpected '}'"),
        ("ok\n{% if %}{% endif %}", 2, "expected an expression"),
        ("a\nb\n{% for x in y %}", 3, "endfor"),
        ("{{ x | no_such_filter }}", 1, "no_such_filter"),
    ],
)
def test_syntax_error_names_problem_and_line(source: str, line: int, problem: str) -> None:
    with pytest.raises(TemplateError) as raised:
        compile_template(source)
    message = str(raised.value)
    assert f"line {line}" in message
    assert problem.lower() in message.lower()


# --- native typing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ trigger.body.count }}", 5),
        ("{{ trigger.body.ratio }}", 0.5),
        ("{{ trigger.body.items }}", [1, 2, 3]),
        ("{{ trigger.body.flag }}", True),
        ("{{ trigger.body.off }}", False),
        ("{{ trigger.body.nothing }}", None),
        ("{{ trigger.body.object }}", {"id": "obj-1", "tags": ["a", "b"]}),
        ("{{ trigger.body.name }}", "hook"),
        ("{{ trigger.body.count * 2 + 1 }}", 11),
        ("{{ trigger.body.items | length }}", 3),
        ("{{ trigger.body.items | map('string') | list }}", ["1", "2", "3"]),
        ("{{ trigger.body.people | selectattr('age', 'gt', 18) | list }}", [PAYLOAD["people"][0]]),
        ("{{ {'k': trigger.body.count} }}", {"k": 5}),
    ],
)
def test_native_expression_keeps_its_type(source: str, expected: Any) -> None:
    result = render(source)
    assert result == expected
    assert type(result) is type(expected)


def test_native_markup_becomes_plain_str() -> None:
    result = render("{{ trigger.body.name | e }}")
    assert result == "hook"
    assert type(result) is str


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("n={{ trigger.body.count }}", "n=5"),
        ("{{ trigger.body.count }}{{ trigger.body.count }}", "55"),
        ("{{ trigger.body.flag }}!", "True!"),
        ("{% for i in trigger.body.items %}{{ i }},{% endfor %}", "1,2,3,"),
        ("{% if trigger.body.flag %}\nyes\n{% endif %}", "yes\n"),
        ("id: {{ trigger.body.object.id }}", "id: obj-1"),
    ],
)
def test_string_mode_renders_str(source: str, expected: str) -> None:
    assert render(source) == expected


def test_attribute_and_item_access_on_dicts() -> None:
    assert render("{{ trigger['body']['object']['id'] }}") == "obj-1"
    assert render("{{ trigger.body['object'].id }}") == "obj-1"
    assert render("{{ trigger.headers['X-Custom-Header'] }}") == "v1"


def test_payload_key_wins_over_dict_method() -> None:
    context = {"trigger": {"body": {"keys": "k", "items": [9], "values": {"v": 1}}}}
    assert render("{{ trigger.body.keys }}", context) == "k"
    assert render("{{ trigger.body.items }}", context) == [9]
    assert render("{{ trigger.body.values.v }}", context) == 1


def test_dict_methods_still_callable_when_no_such_key() -> None:
    assert render("{{ rule.keys() | sort }}") == ["name", "pack"]
    assert render("{% for k, v in rule.items() | sort %}{{ k }}={{ v }};{% endfor %}") == (
        "name=r1;pack=default;"
    )


# --- undefined values ------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("{{ trgger.body.count }}", "trgger"),
        ("{{ trigger.body.cuont }}", "cuont"),
        ("value: {{ trigger.body.cuont }}", "cuont"),
        ("{{ [trigger.body.cuont] }}", "cuont"),
        ("{% if trigger.body.missing %}x{% endif %}", "missing"),
    ],
)
def test_undefined_is_an_error_naming_the_variable(source: str, named: str) -> None:
    with pytest.raises(TemplateError) as raised:
        render(source)
    assert named in str(raised.value)
    assert source in str(raised.value)
    assert not isinstance(raised.value, SandboxViolation)


def test_default_and_is_defined_work_for_missing_keys() -> None:
    assert render("{{ trigger.body.x | default('y') }}") == "y"
    assert render("{{ trigger.body.count | default('y') }}") == 5
    assert render("{{ trigger.body.x is defined }}") is False
    assert render("{{ trigger.body.count is defined }}") is True
    assert render("{{ trigger.body.x is not defined }}") is True
    assert render("v={{ trigger.body.x | default('y') }}") == "v=y"
    assert render("{% if trigger.body.x is defined %}a{% else %}b{% endif %}") == "b"


# --- render_value -----------------------------------------------------------------


def test_render_value_walks_nested_containers() -> None:
    parameters = {
        "count": "{{ trigger.body.count }}",
        "message": "hello {{ trigger.body.name }}",
        "literal": "no template here",
        "number": 7,
        "enabled": False,
        "none": None,
        "nested": {"ids": ["{{ trigger.body.object.id }}", "static", 3]},
        "pair": ("{{ trigger.body.flag }}", "x"),
        "user": "{{ action_context.user }}",
    }
    rendered = render_value(parameters, CONTEXT)
    assert rendered == {
        "count": 5,
        "message": "hello hook",
        "literal": "no template here",
        "number": 7,
        "enabled": False,
        "none": None,
        "nested": {"ids": ["obj-1", "static", 3]},
        "pair": (True, "x"),
        "user": "stanley",
    }
    # new containers: the input is left untouched
    assert parameters["count"] == "{{ trigger.body.count }}"
    assert rendered["nested"] is not parameters["nested"]


def test_render_value_leaves_non_str_scalars_and_keys() -> None:
    assert render_value(42, CONTEXT) == 42
    assert render_value(None, CONTEXT) is None
    assert render_value({"{{ k }}": 1}, CONTEXT) == {"{{ k }}": 1}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ trigger.body.injected }}", "{{ 7*7 }}"),
        ("{{ trigger.body.block }}", "{% for i in range(3) %}x{% endfor %}"),
        ("{{ trigger.body.object }}", PAYLOAD["object"]),
    ],
)
def test_payload_strings_are_never_rendered_again(source: str, expected: Any) -> None:
    assert render_value({"p": source}, CONTEXT) == {"p": expected}


def test_payload_template_embedded_in_string_stays_literal() -> None:
    assert render_value("got {{ trigger.body.injected }}", CONTEXT) == "got {{ 7*7 }}"
    assert render_value(["{{ trigger.body.items }}"], CONTEXT) == [[1, 2, 3]]


# --- StackStorm filters -------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ trigger.body.object | to_json_string }}", '{\n    "id":"obj-1",\n'),
        (
            "{{ {'b': 1, 'a': 2} | to_json_string(indent=None, sort_keys=True) }}",
            '{"a":2,"b":1}',
        ),
        ("{{ trigger.body.json | from_json_string }}", {"a": [1, 2]}),
        ("{{ (trigger.body.json | from_json_string).a[1] }}", 2),
        ("{{ {'a': [1, 2]} | to_yaml_string }}", "a:\n- 1\n- 2\n"),
        ("{{ trigger.body.yaml | from_yaml_string }}", {"a": 1, "b": ["x", "y"]}),
        ("{{ trigger.body.items | to_complex }}", "[1, 2, 3]"),
        ("{{ 'say \"hi\"\\n' | json_escape }}", '"say \\"hi\\"\\n"'),
        ("{{ 'hook-42' | regex_match('hook') }}", True),
        ("{{ 'a-hook' | regex_match('hook') }}", False),
        ("{{ 'HOOK' | regex_match('hook', ignorecase=True) }}", True),
        ("{{ trigger.body.count | regex_match('5') }}", True),
        ("{{ 'a-hook' | regex_search('hook') }}", True),
        ("{{ 'a-hook' | regex_search('^hook') }}", False),
        ("{{ 'v1.2.3' | regex_replace('\\\\.', '-') }}", "v1-2-3"),
        ("{{ 'AbA' | regex_replace('a', 'x', ignorecase=True) }}", "xbx"),
        ("{{ 'id=42 n=7' | regex_substring('id=(\\\\d+) n=(\\\\d+)') }}", "42"),
        ("{{ 'id=42 n=7' | regex_substring('id=(\\\\d+) n=(\\\\d+)', group_index=1) }}", "7"),
        ("{{ 'nothing' | regex_substring('(\\\\d+)') }}", ""),
        ("{{ 'no groups 1' | regex_substring('\\\\d') }}", ""),
        ("{{ trigger.body.path | basename }}", "app.log"),
        ("{{ trigger.body.path | dirname }}", "/var/log"),
        ("{{ trigger.body.people | json_query('[?age > `18`].name') }}", ["ann"]),
        ("{{ trigger.body | json_query('object.tags[0]') }}", "a"),
        ("{{ trigger.body.nothing | use_none }}", None),
        ("{{ trigger.body.count | use_none }}", 5),
        ("{{ trigger.body.nothing | use_none }} ", None),
    ],
)
def test_stackstorm_filters(source: str, expected: Any) -> None:
    result = render(source)
    if isinstance(expected, str) and expected.endswith("\n") and "{\n" in expected:
        assert isinstance(result, str)
        assert result.startswith(expected)
    else:
        assert result == expected
        assert type(result) is type(expected)


def test_to_json_string_default_is_stackstorm_indented() -> None:
    assert render("{{ {'a': 1} | to_json_string }}") == '{\n    "a":1\n}'


def test_use_none_in_string_mode() -> None:
    assert render("{% if true %}{{ trigger.body.nothing | use_none }}{% endif %}") is None
    assert render("x={{ trigger.body.nothing | use_none }}") == "x="


def test_filter_errors_become_template_errors() -> None:
    with pytest.raises(TemplateError) as raised:
        render("{{ 'not json' | from_json_string }}")
    assert "JSONDecodeError" in str(raised.value)
    assert "from_json_string" in str(raised.value)
    with pytest.raises(TemplateError, match=r"PatternError: missing \)"):
        render("{{ 'x' | regex_match('(') }}")


def test_register_filter_adds_and_rejects_duplicates() -> None:
    name = f"shout_{uuid.uuid4().hex[:8]}"
    register_filter(name, lambda value: str(value).upper() + "!")
    assert render("{{ trigger.body.name | " + name + " }}") == "HOOK!"
    with pytest.raises(RegistryError, match=name):
        register_filter(name, str.lower)
    with pytest.raises(RegistryError, match="regex_match"):
        register_filter("regex_match", str.lower)
    with pytest.raises(RegistryError, match="default"):
        register_filter("default", str.lower)


def test_register_filter_rejects_bad_names_and_non_callables() -> None:
    with pytest.raises(RegistryError, match="identifier"):
        register_filter("not a name", str.lower)
    with pytest.raises(RegistryError, match="callable"):
        register_filter(f"f_{uuid.uuid4().hex[:8]}", "nope")  # type: ignore[arg-type]


# --- runtime errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "cause"),
    [
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ trigger.body.name + 1 }}", "TypeError"),
        ("n={{ trigger.body.count / 0 }}", "ZeroDivisionError"),
        ("{{ trigger.body.items[10] }}", "no element 10"),
    ],
)
def test_runtime_errors_name_source_and_cause(source: str, cause: str) -> None:
    with pytest.raises(TemplateError) as raised:
        render(source)
    assert source in str(raised.value)
    assert cause in str(raised.value)


def test_long_source_is_shortened_in_messages() -> None:
    source = "{{ nope }}" + "x" * 5000
    with pytest.raises(TemplateError) as raised:
        render(source)
    assert "nope" in str(raised.value)
    assert len(str(raised.value)) < 500


# --- sandbox ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "attribute"),
    [
        ("{{ ''.__class__.__mro__ }}", "__class__"),
        ("{{ ().__class__.__base__.__subclasses__() }}", "__class__"),
        ("{{ trigger | attr('__class__') }}", "__class__"),
        ("x {{ trigger.body.name | attr('__class__') }}", "__class__"),
        ("{{ '{0.__class__}'.format(trigger) }}", "format"),
        ("{{ ('{0.__class__}' | attr('format'))(trigger) }}", "format"),
        ("{{ 'x' | attr('format') }}", "format"),
        ("{{ '{0.__class__}'.format_map(trigger) }}", "format_map"),
        ("{{ self.__init__.__globals__ }}", "__init__"),
        ("{{ cycler.__init__.__globals__ }}", "__init__"),
        ("{{ joiner.__init__.__globals__ }}", "__init__"),
        ("{{ namespace.__init__.__globals__ }}", "__init__"),
        ("{{ lipsum.__globals__ }}", "__globals__"),
        ("{{ lipsum.__globals__['os'] }}", "__globals__"),
        ("{{ range.__globals__ }}", "__globals__"),
        ("{{ trigger.body.items.__class__ }}", "__class__"),
        ("{{ rule.keys.__self__ }}", "__self__"),
        ("{{ trigger['__class__'] }}", "__class__"),
        ("{{ (trigger.body.people | map(attribute='__class__') | list) }}", "__class__"),
        ("{{ trigger.body.items.append(4) }}", "append"),
        ("{{ trigger.body.object.update({'id': 1}) }}", "update"),
        ("{{ trigger.body.object.pop('id') }}", "pop"),
    ],
)
def test_sandbox_escapes_are_refused(source: str, attribute: str) -> None:
    with pytest.raises(SandboxViolation) as raised:
        render(source)
    assert f"template tried to access an unsafe attribute '{attribute}'" in str(raised.value)
    # the payload was not modified by the mutation attempts
    assert PAYLOAD["items"] == [1, 2, 3]
    assert PAYLOAD["object"]["id"] == "obj-1"


def test_unsafe_attribute_check_does_not_pass_silently_through_is_defined() -> None:
    # `is defined` on an unsafe attribute answers False rather than exposing the object
    assert render("{{ ''.__class__ is defined }}") is False


@pytest.mark.parametrize(
    "source",
    [
        "{{ rule.keys }}",
        "value: {{ rule.keys }}",
        "{{ cycler }}",
        "{{ lipsum }}",
        "{{ trigger.body.items | map('string') }}",
        "{{ [rule.keys] }}",
        "{{ {'f': range} }}",
    ],
)
def test_internal_objects_never_render_silently(source: str) -> None:
    with pytest.raises(SandboxViolation, match="not data"):
        render(source)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("{{ range(10**9) | list }}", "range"),
        ("{% for i in range(10**30) %}{% endfor %}", "range"),
        ("{{ 'a' * 10**8 }}", "too large"),
        ("{{ 10**8 * [1] }}", "too large"),
        ("{{ 2 ** 10000000 }}", "too large"),
        ("{{ '%999999999d' % 1 }}", "printf"),
        ("{{ lipsum(100000) }}", "lipsum"),
    ],
)
def test_resource_abuse_is_refused(source: str, problem: str) -> None:
    with pytest.raises(SandboxViolation, match=problem):
        render(source)


def test_reasonable_sizes_still_work() -> None:
    assert render("{{ range(3) | list }}") == [0, 1, 2]
    assert render("{{ 'ab' * 3 }}") == "ababab"
    assert render("{{ 2 ** 10 }}") == 1024
    assert render("{{ '%05d' % 42 }}") == "00042"
    assert render("{{ '%s-%s' | format('a', 1) }}") == "a-1"


def test_rendered_output_over_the_bound_is_refused() -> None:
    # Within the loop budget (template_limits), beyond the output bound.
    source = (
        "{% for i in range(1000) %}{% for j in range(100) %}xxxxxxxxxxx{% endfor %}{% endfor %}"
    )
    with pytest.raises(TemplateError, match="rendered more than"):
        render(source)
    big = {"trigger": {"s": "y" * (MAX_RENDERED_CHARS + 1)}}
    with pytest.raises(TemplateError, match="rendered more than"):
        render("{{ trigger.s }}", big)
    with pytest.raises(TemplateError, match="rendered more than"):
        render("s={{ trigger.s }}", big)
    exact = {"trigger": {"s": "y" * MAX_RENDERED_CHARS}}
    assert len(render("{{ trigger.s }}", exact)) == MAX_RENDERED_CHARS
