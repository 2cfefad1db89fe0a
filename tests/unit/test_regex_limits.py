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
