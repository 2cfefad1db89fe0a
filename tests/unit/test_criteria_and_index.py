"""Evaluation with traces, backstop rules, the RuleSet index, typed parameter rendering."""

from __future__ import annotations

import pytest

from engine.errors import RuleError, TemplateError
from engine.rules import RuleSet, load_rule, render_parameters


def rule(
    name="r", trigger="core.st2.webhook", url="hook", criteria=None, action_params=None, extra=""
):
    import yaml

    data = {
        "name": name,
        "pack": "t",
        "trigger": {"type": trigger, "parameters": {"url": url} if url else {}},
        "criteria": criteria or {},
        "action": {"ref": "core.noop", "parameters": action_params or {}},
    }
    text = yaml.safe_dump(data, sort_keys=False) + extra
    return load_rule(text)


def test_trace_records_every_criterion_and_reasons():
    r = rule(
        criteria={
            "trigger.body.n": {"type": "lessthan", "pattern": 3},
            "trigger.body.s": {"type": "equals", "pattern": "a"},
            "trigger.body.missing": {"type": "equals", "pattern": "x"},
        }
    )
    result = r.evaluate({"body": {"n": "5", "s": "a"}})
    assert result.matched is False
    first, second, third = result.trace
    assert (first.key, first.operator, first.value, first.passed) == (
        "trigger.body.n",
        "lessthan",
        "5",
        False,
    )
    assert "str" in first.reason and "int" in first.reason
    assert second.passed is True and second.reason is None
    assert third.value is None and "missing" in third.reason
    assert result.first_failure is first
    assert r.evaluate({"body": {"n": 1, "s": "a", "missing": "x"}}).matched


def test_stop_on_failure_shortens_the_trace():
    r = rule(
        criteria={
            "trigger.a#1": {"type": "equals", "pattern": 1},
            "trigger.a#2": {"type": "greaterthan", "pattern": 0},
        }
    )
    assert len(r.evaluate({"a": 2}, stop_on_failure=True).trace) == 1
    assert len(r.evaluate({"a": 2}).trace) == 2
    assert r.evaluate({"a": 1}).matched


def test_empty_criteria_match_and_disabled_rules_never_do():
    assert rule().evaluate({}).matched
    disabled = rule(extra="enabled: false\n")
    result = disabled.evaluate({})
    assert not result.matched and result.reason == "rule is disabled"


def test_pattern_templates_render_against_the_payload_and_keep_type():
    r = rule(
        criteria={
            "trigger.body.count": {"type": "equals", "pattern": "{{ trigger.body.expected }}"}
        }
    )
    assert r.evaluate({"body": {"count": 7, "expected": 7}}).matched
    assert not r.evaluate({"body": {"count": 7, "expected": 8}}).matched
    broken = r.evaluate({"body": {"count": 7}})
    assert not broken.matched and "did not render" in broken.trace[0].reason


def test_search_children_evaluate_against_items():
    r = rule(
        criteria={
            "trigger.body.fields": {
                "type": "search",
                "condition": "any",
                "pattern": {
                    "item.name": {"type": "equals", "pattern": "Status"},
                    "item.to": {"type": "equals", "pattern": "Approved"},
                },
            }
        }
    )
    assert r.evaluate(
        {"body": {"fields": [{"name": "x", "to": "y"}, {"name": "Status", "to": "Approved"}]}}
    ).matched
    assert not r.evaluate({"body": {"fields": [{"name": "Status", "to": "Open"}]}}).matched
    not_a_list = r.evaluate({"body": {"fields": "oops"}})
    assert not not_a_list.matched and not_a_list.trace[0].reason


def test_index_selects_candidates_by_trigger_and_webhook():
    rules = [rule(name=f"r{i}", url=f"hook{i}") for i in range(50)]
    rules.append(rule(name="custom", trigger="my.trigger", url=None))
    rs = RuleSet(rules)
    assert [r.name for r in rs.candidates("core.st2.webhook", "/hook7/")] == ["r7"]
    assert [r.name for r in rs.candidates("my.trigger")] == ["custom"]
    assert rs.candidates("core.st2.webhook", "nope") == []
    assert rs.candidates("other.trigger") == []
    assert set(rs.webhooks) == {f"hook{i}" for i in range(50)}
    assert rs.trigger_types == {"core.st2.webhook", "my.trigger"}
    assert [r.name for r in rs.match("core.st2.webhook", {}, "hook3")] == ["r3"]


def test_disabled_rules_are_not_candidates_and_duplicates_refused():
    rs = RuleSet([rule(name="off", extra="enabled: false\n")])
    assert rs.candidates("core.st2.webhook", "hook") == []
    assert "t.off" in rs
    with pytest.raises(RuleError):
        RuleSet([rule(), rule()])


def test_backstop_matches_only_when_no_standard_rule_matched():
    standard = rule(name="std", criteria={"trigger.body.x": {"type": "equals", "pattern": 1}})
    backstop = rule(name="bs", extra="type: {ref: backstop}\n")
    rs = RuleSet([backstop, standard])
    assert [r.name for r in rs.match("core.st2.webhook", {"body": {"x": 1}}, "hook")] == ["std"]
    assert [r.name for r in rs.match("core.st2.webhook", {"body": {"x": 2}}, "hook")] == ["bs"]
    results = {e.rule.name: e for e in rs.evaluate("core.st2.webhook", {"body": {"x": 1}}, "hook")}
    assert results["bs"].evaluation.reason == "a standard rule matched this trigger instance"


def test_render_parameters_keeps_native_types_and_never_rerenders_payload():
    r = rule(
        action_params={
            "items": "{{ trigger.body.items }}",
            "count": "{{ trigger.body.n }}",
            "flag": "{{ trigger.body.flag }}",
            "msg": "n={{ trigger.body.n }} by {{ rule.ref }}",
            "literal": "{{ trigger.body.evil }}",
            "nested": {"list": ["{{ trigger.body.n + 1 }}", 3]},
            "ctx": "{{ action_context.rule.ref }}",
        }
    )
    payload = {"body": {"items": [1, 2], "n": 5, "flag": False, "evil": "{{ 7 * 7 }}"}}
    params = render_parameters(r, payload)
    assert params == {
        "items": [1, 2],
        "count": 5,
        "flag": False,
        "msg": "n=5 by t.r",
        "literal": "{{ 7 * 7 }}",
        "nested": {"list": [6, 3]},
        "ctx": "t.r",
    }


def test_render_errors_are_template_errors():
    r = rule(action_params={"x": "{{ trigger.body.nope.deeper }}"})
    with pytest.raises(TemplateError):
        render_parameters(r, {"body": {}})
    escape = rule(action_params={"x": "{{ ''.__class__.__mro__ }}"})
    with pytest.raises(TemplateError):
        render_parameters(escape, {})


def test_shell_command_parameters_quote_every_inserted_value():
    r = rule(
        action_params={
            "cmd": "echo {{ trigger.body.msg }} {{ trigger.body.dir | unquoted }}",
            "other": "{{ trigger.body.msg }}",
        }
    )
    payload = {"body": {"msg": "hi; touch /tmp/pwned $(id)", "dir": "$HOME"}}
    params = render_parameters(r, payload, parameter_kinds={"cmd": "shell-command"})
    assert params["cmd"] == "echo 'hi; touch /tmp/pwned $(id)' $HOME"
    assert params["other"] == "hi; touch /tmp/pwned $(id)"
    import shlex

    assert shlex.split(params["cmd"]) == ["echo", "hi; touch /tmp/pwned $(id)", "$HOME"]
