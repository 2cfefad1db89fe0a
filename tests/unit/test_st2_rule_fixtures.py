"""StackStorm's own rule fixtures load as StackStorm loads them: names it accepts (dots,
spaces), trigger parameters it refuses (checked against the trigger type's parameters
schema), every error of a file reported, static regular expressions checked at load.

Fixtures: tests/support/st2_rules/ (copied unchanged from StackStorm, see its README).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import RuleLoadError, RuleLoadErrors
from engine.model.names import MAX_NAME_CHARS
from engine.packs import load_packs
from engine.rules import load_rule, load_rules
from engine.rules.trigger_parameters import (
    SYSTEM_PARAMETER_SCHEMAS,
    draft4_schema,
    unfit_trigger_parameters,
)
from engine.runners import default_runners
from tests.support.packs import pack_meta

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "st2_rules"
GENERIC = FIXTURES / "generic"

# What StackStorm's API and registrar refuse among its fixtures (st2api test_rules.py,
# st2common validators/api/reactor.py), and the field each names.
REFUSED = {
    "cron_timer_rule_invalid_parameters.yaml": "trigger.parameters.minutex",
    "cron_timer_rule_invalid_parameters_1.yaml": "trigger.parameters.day_of_week",
    "cron_timer_rule_invalid_parameters_2.yaml": "trigger.parameters",
    "cron_timer_rule_invalid_parameters_3.yaml": "trigger.parameters",
    "date_timer_rule_invalid_parameters.yaml": "trigger.parameters",
}


def test_the_fixtures_stackstorm_accepts_load_with_their_names():
    accepted = sorted(p for p in GENERIC.glob("*.yaml") if p.name not in REFUSED)
    assert len(accepted) >= 20
    refs = {load_rule(path).ref for path in accepted}
    assert {"wolfpack.st2.person.joe", "wolfpack.rule space"} <= refs
    timers = {load_rule(p).ref for p in (FIXTURES / "pack_with_rules").glob("rule_with_*.yaml")}
    assert timers == {
        "pack_with_rules.sample.with_timer",
        "pack_with_rules.sample.with_the_same_timer",
    }


@pytest.mark.parametrize(("file", "field"), sorted(REFUSED.items()))
def test_the_fixtures_stackstorm_refuses_are_refused_naming_the_field(file, field):
    with pytest.raises(RuleLoadError) as raised:
        load_rule(GENERIC / file)
    error = raised.value
    assert error.file == str(GENERIC / file) and error.line is not None
    assert error.field == field
    assert str(error).startswith(f"{GENERIC / file}:{error.line}:")


def refusal(file: str) -> str:
    with pytest.raises(RuleLoadError) as raised:
        load_rule(GENERIC / file)
    return str(raised.value)


def test_bad_timer_messages_say_what_is_wrong():
    messages = {file: refusal(file) for file in REFUSED}
    assert "unknown parameter 'minutex'" in messages["cron_timer_rule_invalid_parameters.yaml"]
    assert (
        "1000 is greater than the maximum of 6"
        in messages["cron_timer_rule_invalid_parameters_1.yaml"]
    )
    assert 'weekday name "abcdef"' in messages["cron_timer_rule_invalid_parameters_2.yaml"]
    assert (
        "missing required parameter 'date'" in messages["date_timer_rule_invalid_parameters.yaml"]
    )


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"unit": "fortnights", "delta": 1}, "'fortnights' is not one of"),
        ({"unit": "seconds"}, "missing required parameter 'delta'"),
        ({"unit": "seconds", "delta": "5"}, "'5' is not of type 'integer'"),
        ({"unit": "seconds", "delta": 0}, "delta must be a positive number"),
    ],
)
def test_interval_timer_parameters(parameters, message):
    rule = {
        "name": "t",
        "trigger": {"type": "core.st2.IntervalTimer", "parameters": parameters},
        "action": {"ref": "core.noop"},
    }
    with pytest.raises(RuleLoadError, match=message):
        load_rule(rule)


CRON = """\
name: c
trigger: {type: core.st2.CronTimer, parameters: {minute: '*/5', day_of_week: mon-fri}}
action: {ref: core.noop}
"""
UNQUOTED_DATE = """\
name: d
trigger:
  type: core.st2.DateTimer
  parameters: {date: 2030-01-31 08:00:00}
action: {ref: core.noop}
"""


def test_cron_fields_take_apscheduler_expressions_and_dates_may_be_unquoted():
    assert load_rule(CRON).trigger_parameters["minute"] == "*/5"
    assert load_rule(UNQUOTED_DATE).trigger_type == "core.st2.DateTimer"


def test_the_core_pack_declares_the_system_schemas():
    packs, errors = load_packs([], runners=default_runners())
    assert errors == []
    declared = packs.trigger_parameter_schemas()
    for ref, schema in SYSTEM_PARAMETER_SCHEMAS.items():
        assert declared[ref] == schema, ref


# --- trigger types from packs -----------------------------------------------------------


def wolfpack(tmp_path: Path, rules: dict[str, str]) -> Path:
    pack = tmp_path / "wolfpack"
    (pack / "triggers").mkdir(parents=True)
    (pack / "rules").mkdir()
    (pack / "pack.yaml").write_text(pack_meta("wolfpack"))
    for name in ("triggertype_with_parameter.yaml", "triggertype_with_parameters_2.yaml"):
        (pack / "triggers" / name).write_text((FIXTURES / "triggertypes" / name).read_text())
    for name, text in rules.items():
        (pack / "rules" / name).write_text(text)
    return pack


def test_pack_trigger_types_check_rule_parameters(tmp_path):
    bad = (GENERIC / "rule_invalid_trigger_parameter_type.yaml").read_text()
    good = (GENERIC / "rule_trigger_params.yaml").read_text()
    missing = good.replace("name: rule_trigger_params", "name: missing").replace(
        "    x : 'ignore'\n", "    y: 1\n"
    )
    assert missing != good
    pack = wolfpack(tmp_path, {"bad.yaml": bad, "good.yaml": good, "missing.yaml": missing})
    packs, errors = load_packs([tmp_path], runners=default_runners())
    assert errors == []
    kept, refused = unfit_trigger_parameters(packs.rules(), packs.trigger_parameter_schemas())
    assert [rule.ref for rule in kept] == ["wolfpack.rule_trigger_params"]
    by_field = {(Path(e.file).name, e.field): str(e) for e in refused}
    assert set(by_field) == {
        ("bad.yaml", "trigger.parameters.param1"),
        ("missing.yaml", "trigger.parameters"),  # 'x' (required: true, draft-3 style)
        ("missing.yaml", "trigger.parameters.y"),
    }
    bad_line = next(e for e in refused if e.field == "trigger.parameters.param1").line
    assert bad.splitlines()[bad_line - 1].strip().startswith("param1:")
    assert "12345 is not of type 'string'" in by_field[("bad.yaml", "trigger.parameters.param1")]
    assert "missing required parameter 'x'" in by_field[("missing.yaml", "trigger.parameters")]
    assert str(pack) in by_field[("bad.yaml", "trigger.parameters.param1")]


def test_draft3_required_flags_become_a_required_list():
    schema = {"type": "object", "properties": {"a": {"type": "string", "required": True}}}
    assert draft4_schema(schema) == {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
    }
    assert schema["properties"]["a"]["required"] is True  # the original is untouched


# --- names ------------------------------------------------------------------------------


def named(name: object) -> dict:
    return {"name": name, "trigger": {"type": "core.st2.webhook", "parameters": {"url": "h"}},
            "action": {"ref": "core.noop"}}  # fmt: skip


@pytest.mark.parametrize(
    "name", ["st2.person.joe", "rule space", "../../etc/passwd", "café ☕ 規則", "a/b?c#d%2F"]
)
def test_any_name_stackstorm_accepts_loads(name):
    rule = load_rule(named(name))
    assert rule.name == name and rule.ref == f"default.{name}"
    assert len(rule.id) == 24


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a\x00b", "holds a control character"),
        ("line\nforged", "holds a control character"),
        ("\x1b[31mred", "holds a control character"),
        ("", "name must not be empty"),
        ("n" * (MAX_NAME_CHARS + 1), f"the limit is {MAX_NAME_CHARS} characters"),
        (42, "expected string"),
    ],
)
def test_names_that_cannot_be_shown_or_stored_are_refused(name, message):
    with pytest.raises(RuleLoadError, match=message) as raised:
        load_rule(named(name))
    assert raised.value.field == "name"


# --- every error of a file; regular expressions at load ---------------------------------

MANY_ERRORS = """\
name: many
trigger:
  type: core.st2.CronTimer
  parameters: {minutex: 0}
criteria:
  trigger.a: {type: matchregex, pattern: "(unclosed"}
  trigger.b: {type: equalz, pattern: x}
  trigger.c: {type: iregex, pattern: "[z-a]"}
  trigger.d: {type: regex, pattern: "ok{{ trigger.x }}"}
  trigger.list:
    type: search
    condition: any
    pattern:
      item.name: {type: regex, pattern: "a)"}
action:
  ref: core.local
  parameters: {cmd: "{{ broken"}
"""


def test_every_error_of_a_file_is_reported_with_its_line(tmp_path):
    file = tmp_path / "many.yaml"
    file.write_text(MANY_ERRORS)
    with pytest.raises(RuleLoadErrors) as raised:
        load_rule(file)
    found = {(e.line, e.field): e.message for e in raised.value.errors}
    assert [line for line, _ in found] == sorted(line for line, _ in found)
    assert set(found) == {
        (4, "trigger.parameters.minutex"),
        (6, 'criteria."trigger.a".pattern'),
        (7, 'criteria."trigger.b".type'),
        (8, 'criteria."trigger.c".pattern'),
        (14, 'criteria."trigger.list".pattern."item.name".pattern'),
        (17, "action.parameters.cmd"),
    }
    assert (
        "matchregex pattern '(unclosed' is not a valid regular expression"
        in found[(6, 'criteria."trigger.a".pattern')]
    )
    assert "at position 0" in found[(6, 'criteria."trigger.a".pattern')]
    assert "bad character range z-a at position 1" in found[(8, 'criteria."trigger.c".pattern')]
    assert (
        "unbalanced parenthesis at position 1"
        in found[(14, 'criteria."trigger.list".pattern."item.name".pattern')]
    )
    # Printed, the error lists them all, one file:line:col each.
    lines = str(raised.value).splitlines()
    assert len(lines) == 6 and all(line.startswith(f"{file}:") for line in lines)
    # A directory load lists each of them too.
    _, errors = load_rules(tmp_path)
    assert len(errors) == 6


def test_a_templated_regex_is_checked_when_rendered_not_at_load():
    rule = load_rule(
        {**named("t"), "criteria": {"trigger.a": {"type": "regex", "pattern": "{{ trigger.p }}"}}}
    )
    assert rule.evaluate({"a": "x", "p": "("}).matched is False
