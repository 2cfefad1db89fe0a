"""A catastrophic regular expression is stopped, not left to stall the engine.

Each check runs in a child interpreter with a deadline: with an unbounded matcher these
patterns run for hours, and a hung child is killed and reported rather than hanging the
suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Exponential in the length of the run of "a"s under a backtracking matcher.
EVIL_PATTERN = "^(a|aa)+$"
EVIL_VALUE = "a" * 40 + "!"


def run_child(code: str) -> dict:
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("the match was never stopped: the child ran for 60 s") from None
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_criterion_with_a_catastrophic_pattern_fails_with_a_reason():
    result = run_child(
        f"""
import json
from engine.errors import CriterionTypeError
from engine.rules.operators import get_operator
outcome = {{}}
for op in ("regex", "iregex", "matchregex"):
    try:
        get_operator(op).func({EVIL_VALUE!r}, {EVIL_PATTERN!r})
        outcome[op] = "finished"
    except CriterionTypeError as error:
        outcome[op] = str(error)
# An ordinary pattern on the same value still answers.
outcome["ordinary"] = get_operator("regex").func({EVIL_VALUE!r}, "a+!$")
print(json.dumps(outcome))
"""
    )
    for op in ("regex", "iregex", "matchregex"):
        assert result[op].startswith(f"{op}: pattern '{EVIL_PATTERN}' ran longer than"), result
        assert "41 characters" in result[op] and "catastrophic backtracking" in result[op]
    assert result["ordinary"] is True


def test_a_template_regex_filter_with_a_catastrophic_pattern_fails_the_template():
    result = run_child(
        f"""
import json
from engine.errors import TemplateError
from engine.rules.templates import render_value
outcome = {{}}
for name in ("regex_match", "regex_search", "regex_replace", "regex_substring"):
    extra = ", 'x'" if name == "regex_replace" else ""
    source = "{{{{ v | " + name + "('{EVIL_PATTERN}'" + extra + ") }}}}"
    try:
        render_value(source, {{"v": {EVIL_VALUE!r}}})
        outcome[name] = "finished"
    except TemplateError as error:
        outcome[name] = str(error)
print(json.dumps(outcome))
"""
    )
    for name, message in result.items():
        assert "ran longer than" in message, (name, message)


def test_a_search_over_many_items_shares_one_budget():
    # 400 list items, each stopped after 0.1 s, would hold the loop for 40 s: all the
    # matches of one rule evaluation share one budget instead.
    result = run_child(
        f"""
import json, time, yaml
from engine.rules import load_rule
rule = load_rule(yaml.safe_dump({{
    "name": "evil_search", "pack": "t",
    "trigger": {{"type": "core.st2.webhook", "parameters": {{"url": "x"}}}},
    "criteria": {{"trigger.body.items": {{
        "type": "search", "condition": "any",
        "pattern": {{"item.name": {{"type": "regex", "pattern": {EVIL_PATTERN!r}}}}},
    }}}},
    "action": {{"ref": "core.noop"}},
}}))
items = [{{"name": {EVIL_VALUE!r}}} for _ in range(400)]
started = time.monotonic()
outcome = rule.evaluate({{"body": {{"items": items}}}})
print(json.dumps({{"matched": outcome.matched, "seconds": time.monotonic() - started}}))
"""
    )
    assert result["matched"] is False
    # Generous: the budget is 0.5 s; a machine under load may overshoot it a little.
    assert result["seconds"] < 20, result


def test_action_parameter_schema_patterns_are_bounded_too():
    # A rule renders a sender's value into a parameter whose schema has a pattern.
    result = run_child(
        f"""
import json
from engine.packs.parameters import ActionParameter
spec = ActionParameter.from_definition("branch", {{"type": "string", "pattern": {EVIL_PATTERN!r}}})
errors = [e.message for e in spec.validator.iter_errors({EVIL_VALUE!r})]
ok = [e.message for e in spec.validator.iter_errors("aaaa")]
keyed = ActionParameter.from_definition(
    "labels", {{"type": "object", "patternProperties": {{{EVIL_PATTERN!r}: {{"type": "string"}}}}}}
)
key_errors = [e.message for e in keyed.validator.iter_errors({{{EVIL_VALUE!r}: "v"}})]
print(json.dumps({{"errors": errors, "ok": ok, "key_errors": key_errors}}))
"""
    )
    assert result["ok"] == []
    assert len(result["errors"]) == 1 and "could not be applied" in result["errors"][0]
    assert "ran longer than" in result["errors"][0]
    assert len(result["key_errors"]) == 1 and "ran longer than" in result["key_errors"][0]


def test_what_re_refuses_is_still_refused():
    # The regex package accepts more (\p{L}, a global flag mid-pattern); rules written for
    # StackStorm's re keep failing the same way.
    from engine.errors import CriterionTypeError
    from engine.rules.operators import get_operator

    for pattern in (r"\p{L}", "abc(?i)def", "(?<=a+)b"):
        try:
            get_operator("regex").func("abc", pattern)
        except CriterionTypeError as error:
            assert "is not a valid regular expression" in str(error), pattern
        else:
            raise AssertionError(f"{pattern!r} was accepted")
    assert get_operator("regex").func("2026-11-30", r"^\d{4}-\d{2}-\d{2}$") is True


def test_the_limit_grows_with_the_value_and_a_budget_caps_it(monkeypatch):
    from engine.rules import regexes

    # With no fixed part, only the per-MiB part lets a match on a large value run.
    monkeypatch.setattr(regexes, "MATCH_SECONDS", 0.0)
    large = "a" * 1_048_576 + "deploy"
    assert regexes.search("deploy$", large) is not None
    # A budget already spent refuses the next match without running it.
    with regexes.budget(0.0):
        try:
            regexes.search("deploy$", large)
        except regexes.RegexTimedOut as error:
            assert "already took" in str(error)
        else:
            raise AssertionError("a match ran on a spent budget")
