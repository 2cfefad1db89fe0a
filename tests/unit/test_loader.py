"""Rule loading: StackStorm's format, errors with file:line:col, field path and suggestion."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.errors import RuleLoadError
from engine.rules import load_rule, load_rules

GOOD = """\
name: on_push
pack: examples
trigger:
  type: core.st2.webhook
  parameters: {url: /github/}
criteria:
  trigger.body.ref:
    type: equals
    pattern: refs/heads/main
action:
  ref: core.local
  parameters:
    cmd: "echo {{ trigger.body.ref }}"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_loads_a_stackstorm_rule_from_yaml_text_dict_and_path(tmp_path):
    from_text = load_rule(GOOD)
    from_path = load_rule(write(tmp_path, "r.yaml", GOOD))
    import yaml

    from_dict = load_rule(yaml.safe_load(GOOD))
    for rule in (from_text, from_path, from_dict):
        assert rule.ref == "examples.on_push"
        assert rule.webhook_url == "github"
        assert rule.action_ref == "core.local"
        assert [c.key for c in rule.criteria] == ["trigger.body.ref"]
    assert from_path.source == str(tmp_path / "r.yaml")
    assert from_path.line == 1


def test_pack_defaults_to_default():
    rule = load_rule(GOOD.replace("pack: examples\n", ""))
    assert rule.pack == "default"
    assert load_rule(GOOD.replace("pack: examples\n", ""), pack="mypack").pack == "mypack"


def error_of(text: str, tmp_path: Path) -> RuleLoadError:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(RuleLoadError) as info:
        load_rule(path)
    return info.value


def test_unknown_operator_names_file_line_field_and_suggestion(tmp_path):
    err = error_of(GOOD.replace("type: equals", "type: equal"), tmp_path)
    assert err.file.endswith("bad.yaml")
    assert err.line == 8
    assert err.field == 'criteria."trigger.body.ref".type'
    assert "unknown operator 'equal'; did you mean 'equals'?" in str(err)
    assert str(err).startswith(f"{err.file}:8:11: ")


def test_unknown_top_level_key_is_an_error_with_suggestion(tmp_path):
    err = error_of(GOOD.replace("criteria:", "critera:"), tmp_path)
    assert err.line == 6 and err.column == 1
    assert "unknown rule field 'critera'; did you mean 'criteria'?" in str(err)


def test_unknown_key_inside_criterion(tmp_path):
    err = error_of(GOOD.replace("    pattern: refs", "    patern: refs"), tmp_path)
    assert err.line == 9
    assert "unknown field 'patern'; did you mean 'pattern'?" in str(err)


def test_missing_required_field(tmp_path):
    text = GOOD.split("action:")[0]
    err = error_of(text, tmp_path)
    assert "missing required field 'action'" in str(err)


def test_wrong_type_names_expected_and_got(tmp_path):
    err = error_of(GOOD.replace("pack: examples", "pack: examples\nenabled: yes please"), tmp_path)
    assert err.field == "enabled"
    assert "expected boolean, got a string" in str(err)
    assert err.line == 3


def test_invalid_yaml_reports_position(tmp_path):
    err = error_of("name: x\ntrigger: [unclosed\n", tmp_path)
    assert "invalid YAML" in str(err)
    assert err.line == 3


def test_template_syntax_error_in_parameters_fails_at_load(tmp_path):
    err = error_of(GOOD.replace("{{ trigger.body.ref }}", "{{ trigger.body.ref "), tmp_path)
    assert err.field == "action.parameters.cmd"
    assert err.line == 13


def test_bad_criteria_key_is_reported(tmp_path):
    err = error_of(GOOD.replace("trigger.body.ref:", "trigger..ref:"), tmp_path)
    assert err.field == 'criteria."trigger..ref"'
    assert err.line == 7


def test_webhook_rule_needs_url(tmp_path):
    err = error_of(GOOD.replace("  parameters: {url: /github/}\n", ""), tmp_path)
    assert "trigger.parameters.url" in str(err)


def test_search_needs_a_valid_condition(tmp_path):
    text = GOOD.replace(
        """  trigger.body.ref:
    type: equals
    pattern: refs/heads/main
""",
        """  trigger.body.commits:
    type: search
    condition: anny
    pattern:
      item.author:
        type: equals
        pattern: mona
""",
    )
    err = error_of(text, tmp_path)
    assert "did you mean 'any'" in str(err)
    assert err.field == 'criteria."trigger.body.commits".condition'


def test_condition_on_a_non_search_operator_is_refused(tmp_path):
    err = error_of(
        GOOD.replace("    pattern: refs/heads/main", "    pattern: x\n    condition: any"), tmp_path
    )
    assert "only applies to the search operator" in str(err)


def test_once_per_is_compiled(tmp_path):
    rule = load_rule(GOOD + 'once_per: "{{ trigger.body.object.id }}"\n')
    assert rule.render_once_per_key({"body": {"object": {"id": 42}}}) == "42"


def test_directory_load_reports_every_error_and_keeps_good_files(tmp_path):
    write(tmp_path, "a_good.yaml", GOOD)
    write(tmp_path, "b_bad.yaml", GOOD.replace("type: equals", "type: nope"))
    write(tmp_path, "c_bad.yml", "name: [")
    sub = tmp_path / "nested"
    sub.mkdir()
    write(sub, "d_good.yaml", GOOD.replace("name: on_push", "name: other"))
    write(tmp_path, "notes.txt", "not a rule")
    ruleset, errors = load_rules(tmp_path)
    assert sorted(r.ref for r in ruleset) == ["examples.on_push", "examples.other"]
    assert sorted(Path(e.file).name for e in errors) == ["b_bad.yaml", "c_bad.yml"]


def test_duplicate_refs_are_reported_with_the_first_location(tmp_path):
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD)
    ruleset, errors = load_rules(tmp_path)
    assert len(ruleset) == 1
    assert len(errors) == 1
    assert "already defined at" in str(errors[0]) and "a.yaml:1" in str(errors[0])


def test_missing_path_is_an_error(tmp_path):
    _, errors = load_rules(tmp_path / "nope")
    assert len(errors) == 1 and "no such file" in str(errors[0])


def test_exported_api_fields_are_accepted(tmp_path):
    rule = load_rule(GOOD + "id: abc\nref: examples.on_push\nuid: rule:examples:on_push\n")
    assert rule.ref == "examples.on_push"


def test_yaml_is_loaded_safely(tmp_path):
    err = error_of(GOOD + "context: !!python/object/apply:os.system ['touch /tmp/x']\n", tmp_path)
    assert "invalid YAML" in str(err)
