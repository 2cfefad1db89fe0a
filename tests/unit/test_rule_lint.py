"""Rule warnings: unknown actions and trigger types, criteria that can never match."""

from __future__ import annotations

import pytest

from engine.rules import load_rule
from engine.rules.lint import lint_rules
from engine.rules.yamlsource import closest


def rule(criteria=None, trigger=None, action="core.noop"):
    return load_rule(
        {
            "name": "r",
            "pack": "t",
            "trigger": trigger or {"type": "core.st2.webhook", "parameters": {"url": "h"}},
            "criteria": criteria or {},
            "action": {"ref": action},
        }
    )


def messages(r, **known) -> list[str]:
    return [w.message for w in lint_rules([r], **known)]


def test_a_sound_rule_has_no_warning():
    r = rule({"trigger.body.a": {"type": "equals", "pattern": 1}})
    assert messages(r, known_actions={"core.noop"}, known_packs={"core"}) == []


def test_unknown_action_suggests_a_close_one():
    found = messages(rule(action="core.noopp"), known_actions={"core.noop", "core.local"})
    assert found == ["action 'core.noopp' is not a known action; did you mean 'core.noop'?"]


def test_unknown_trigger_types():
    assert (
        "did you mean 'core.st2.webhook'"
        in messages(rule(trigger={"type": "core.st2.webhooks"}))[0]
    )
    assert (
        "neither built in nor from a loaded pack"
        in messages(rule(trigger={"type": "github.push"}), known_packs={"core"})[0]
    )
    assert messages(rule(trigger={"type": "github.push"}), known_packs={"core", "github"}) == []


def test_generic_triggers_are_known_and_far_names_get_no_suggestion():
    # StackStorm's generic action and notify triggers are system triggers.
    for generic in ("core.st2.generic.actiontrigger", "core.st2.generic.notifytrigger"):
        assert messages(rule(trigger={"type": generic}), known_packs={"core"}) == []
    # A core.* name that is not a likely typo gets no "did you mean" at all.
    found = messages(rule(trigger={"type": "core.st2.generic.whatever"}))
    assert found == ["trigger type 'core.st2.generic.whatever' is not a built-in trigger"]
    found = messages(rule(trigger={"type": "core.st2.foo"}))
    assert found == ["trigger type 'core.st2.foo' is not a built-in trigger"]
    # Trigger types the loaded packs declare count as known (the core pack's own).
    known = {"core.st2.sensor.process_spawn"}
    sensor = {"type": "core.st2.sensor.process_spawn"}
    assert messages(rule(trigger=sensor), known_trigger_types=known) == []
    assert "not a built-in trigger" in messages(rule(trigger=sensor))[0]


def test_far_action_names_get_no_suggestion():
    found = messages(rule(action="examples.orquesta"), known_actions={"core.http", "core.local"})
    assert found == [
        "action 'examples.orquesta' is not a known action (is its pack in packs_dirs?)"
    ]


@pytest.mark.parametrize(
    ("word", "choices", "expected"),
    [
        ("orquesta", ["http-request", "local-shell-cmd", "python-script"], None),
        ("core.st2.generic.actiontrigger", ["core.st2.CronTimer", "core.st2.webhook"], None),
        ("core.st2.CronTimr", ["core.st2.CronTimer", "core.st2.DateTimer"], "core.st2.CronTimer"),
        ("pyhton-script", ["http-request", "python-script"], "python-script"),
        ("critera", ["criteria", "action"], "criteria"),
        ("equls", ["equals", "iequals"], "equals"),
    ],
)
def test_suggestions_only_for_close_names(word, choices, expected):
    assert closest(word, choices) == expected


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (
            {
                "trigger.body.a": {"type": "equals", "pattern": "x"},
                "trigger.body.a#2": {"type": "eq", "pattern": "y"},
            },
            "equals 'x' and 'y'",
        ),
        (
            {"trigger.body.a": {"type": "exists"}, "trigger.body.a#x": {"type": "nexists"}},
            "exists and nexists",
        ),
        (
            {
                "trigger.body.a": {"type": "equals", "pattern": "x"},
                "trigger.body.a#n": {"type": "nequals", "pattern": "x"},
            },
            "equals and nequals 'x'",
        ),
        (
            {
                "trigger.body.a": {"type": "iequals", "pattern": "X"},
                "trigger.body.a#2": {"type": "iequals", "pattern": "y"},
            },
            "iequals 'x' and 'y'",
        ),
    ],
)
def test_criteria_that_can_never_match(criteria, expected):
    found = messages(rule(criteria))
    assert found == [f"criteria on trigger.body.a can never all match: {expected}"]


def test_templated_patterns_and_different_fields_are_not_contradictions():
    criteria = {
        "trigger.body.a": {"type": "equals", "pattern": "x"},
        "trigger.body.a#2": {"type": "equals", "pattern": "{{ trigger.body.b }}"},
        "trigger.body.b": {"type": "equals", "pattern": "y"},
        "trigger.body.a#3": {"type": "equals", "pattern": "x"},
    }
    assert messages(rule(criteria)) == []
