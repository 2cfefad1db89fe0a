"""YAML alias bombs are refused wherever YAML is read (engine.support.safeyaml)."""

from __future__ import annotations

import itertools
import time

import pytest

from engine.config import load_settings
from engine.errors import ConfigError, RuleLoadError, TemplateError, YamlLimitError
from engine.rules import load_rule
from engine.rules.templates import compile_template
from engine.support import safeyaml


def alias_bomb(levels: int = 10, width: int = 9, indent: str = "") -> str:
    """`levels` anchors, each a list of `width` aliases of the one before."""
    lines = [f"{indent}l0: &l0 [{', '.join(['x'] * width)}]"]
    for level in range(1, levels):
        aliases = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"{indent}l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_quickly_with_its_line():
    started = time.monotonic()
    with pytest.raises(YamlLimitError) as caught:
        safeyaml.safe_load(alias_bomb(), file="bomb.yaml")
    assert time.monotonic() - started < 1
    message = str(caught.value)
    assert message.startswith("bomb.yaml:")
    assert "more than 100,000 nodes" in message
    # The first level whose expansion passes the limit: 9**6 > 100,000 (line 6).
    assert caught.value.line == 6


def compact_bomb() -> str:
    """The issue's payload: 10 levels of 9 aliases in a few hundred bytes."""
    names = "abcdefghij"
    lines = ["a: &a [" + ",".join("x" * 9) + "]"]
    for previous, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines)


def test_the_361_byte_payload_bomb_is_refused():
    bomb = compact_bomb()
    assert len(bomb) <= 361
    with pytest.raises(YamlLimitError):
        safeyaml.safe_load(bomb)


def test_documents_with_a_few_aliases_load_as_before():
    text = "base: &base {retries: 3, tags: [a, b]}\nfirst: *base\nsecond: [*base, *base]\n"
    data = safeyaml.safe_load(text)
    assert data["first"] == data["base"] == {"retries": 3, "tags": ["a", "b"]}
    assert data["second"] == [data["base"], data["base"]]
    # Merge keys work too.
    merged = safeyaml.safe_load("a: &a {x: 1}\nb: {<<: *a, y: 2}\n")
    assert merged["b"] == {"x": 1, "y": 2}
    assert safeyaml.safe_load("") is None
    # The bound itself: just under it loads, just over it does not.
    assert safeyaml.check_expansion(safeyaml.compose(alias_bomb(levels=5))) < 100_000
    with pytest.raises(YamlLimitError, match="more than 100,000 nodes"):
        safeyaml.safe_load(alias_bomb(levels=6))


def test_too_many_aliases_are_refused():
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * 11_000) + "]\n"
    with pytest.raises(YamlLimitError, match="more than 10,000 aliases"):
        safeyaml.safe_load(text)


def test_recursive_and_deep_documents_are_refused():
    with pytest.raises(YamlLimitError, match="recursive"):
        safeyaml.safe_load("a: &a [1, *a]\n")
    with pytest.raises(YamlLimitError, match="nested too deeply"):
        safeyaml.safe_load("[" * 20_000 + "]" * 20_000)


def test_a_billion_laughs_rule_file_is_a_located_load_error(tmp_path):
    rule = tmp_path / "bomb.yaml"
    rule.write_text(
        "name: bomb\ntrigger: {type: core.st2.webhook, parameters: {url: x}}\n"
        "action: {ref: core.noop}\nmetadata:\n" + alias_bomb(indent="  ")
    )
    with pytest.raises(RuleLoadError) as caught:
        load_rule(rule)
    assert str(caught.value).startswith(f"{rule}:10:")
    assert "more than 100,000 nodes" in str(caught.value)


def test_a_billion_laughs_config_file_is_a_config_error(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("webhooks: {}\nextra:\n" + alias_bomb(indent="  "))
    with pytest.raises(ConfigError, match="more than 100,000 nodes"):
        load_settings(config, environ={})


def test_from_yaml_string_refuses_a_bomb_in_the_payload():
    template = compile_template("{{ trigger.body.y | from_yaml_string }}")
    assert template.render({"trigger": {"body": {"y": "a: [1, 2]"}}}) == {"a": [1, 2]}
    with pytest.raises(TemplateError, match="more than 100,000 nodes"):
        template.render({"trigger": {"body": {"y": alias_bomb()}}})


def test_an_integer_too_long_to_convert_is_a_yaml_error_not_a_crash(tmp_path):
    # Python refuses int() of more than 4,300 digits with ValueError, which escaped the
    # rule loader: one such rule file stopped `serve` (and `rule validate`) with a traceback.
    text = "a: 1\nn: " + "9" * 5000 + "\n"
    with pytest.raises(YamlLimitError, match=r"r\.yaml:2:4: YAML value cannot be read") as raised:
        safeyaml.safe_load(text, file="r.yaml")
    assert "4300 digits" in str(raised.value)
    rule_file = tmp_path / "r.yaml"
    rule_file.write_text(
        "name: big\npack: t\ntrigger: {type: core.st2.webhook, parameters: {url: big}}\n"
        "action: {ref: core.noop, parameters: {n: " + "9" * 5000 + "}}\n"
    )
    with pytest.raises(RuleLoadError, match=r"r\.yaml:4:.*4300 digits"):
        load_rule(rule_file)
