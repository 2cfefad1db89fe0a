"""Bounded names (issue 15 item 9): every file entry point refuses a longer name with
file:line, the field and the limit; exactly the limit is accepted."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError, NameTooLong, RuleLoadError
from engine.http.hookdefs import load_definitions
from engine.model.apikeys import ApiKeyError, new_api_key
from engine.model.kv import DatastoreError, check_name
from engine.model.names import MAX_KEY_NAME_CHARS, MAX_NAME_CHARS, MAX_REF_CHARS, check_length
from engine.packs import load_packs
from engine.rules import load_rule
from engine.rules.rule import rule_id
from engine.runners import default_runners
from tests.support.packs import pack_meta, write_pack

# The pack core checks actions against the runner registry it is given.
RUNNERS = default_runners()


def rule_yaml(
    name: str = "r", trigger: str = "core.st2.webhook", hook: str = "h", action="core.noop"
):
    return (
        f"name: {name}\n"
        f"trigger: {{type: {trigger}, parameters: {{url: {hook}}}}}\n"
        f"action: {{ref: {action}}}\n"
    )


@pytest.mark.parametrize(
    ("changes", "where", "message"),
    [
        ({"name": "a" * 900_000}, "1:7", "name is 900,000 characters long; the limit is 255"),
        ({"hook": "h" * 256}, "2:53", "trigger.parameters.url (the hook name) is 256 char"),
        (
            {"trigger": "t." + "x" * 510},
            "2:17",
            "trigger.type is 512 characters long; the limit is 511",
        ),
        (
            {"action": "core." + "n" * 507},
            "3:15",
            "action.ref is 512 characters long; the limit is 511",
        ),
    ],
)
def test_rule_files_refuse_long_names(tmp_path, changes, where, message):
    file = tmp_path / "r.yaml"
    file.write_text(rule_yaml(**changes))
    with pytest.raises(RuleLoadError) as error:
        load_rule(file)
    assert str(error.value).startswith(f"{file}:{where}: {message}")
    assert len(str(error.value)) < 500


def test_rule_names_at_the_limit_load(tmp_path):
    rule = load_rule(rule_yaml(name="a" * MAX_NAME_CHARS, hook="h" * MAX_NAME_CHARS))
    assert rule.name == "a" * MAX_NAME_CHARS


def test_rule_ids_are_short_and_stable():
    assert rule_id("ci." + "a" * 900_000) == rule_id("ci." + "a" * 900_000)
    assert len(rule_id("ci." + "a" * 900_000)) == 24
    assert rule_id("ci.a") != rule_id("ci.b")
    assert load_rule(rule_yaml()).to_api()["id"] == rule_id("default.r")


def write_named_pack(root, pack_name: str, action_name: str) -> None:
    """Pack `p` named `pack_name` (line 2 of pack.yaml), with action `action_name`."""
    meta = pack_meta("p", name=pack_name, description="d")
    write_pack(
        root, "p", {"actions/a.yaml": f"name: {action_name}\nrunner_type: noop\n"}, meta=meta
    )


def test_pack_and_action_names_are_bounded(tmp_path):
    write_named_pack(tmp_path / "one", "p" * 256, "a")
    _, errors = load_packs([tmp_path / "one"], runners=RUNNERS)
    assert len(errors) == 1
    assert "pack.yaml:2:7: name is 256 characters long; the limit is 255" in str(errors[0])
    write_named_pack(tmp_path / "two", "p", "a" * 256)
    packs, errors = load_packs([tmp_path / "two"], runners=RUNNERS)
    assert len(errors) == 1
    assert "a.yaml:1:7: name is 256 characters long; the limit is 255" in str(errors[0])
    write_named_pack(tmp_path / "three", "p" * 255, "a" * 255)
    packs, errors = load_packs([tmp_path / "three"], runners=RUNNERS)
    assert errors == [] and packs.action("p." + "a" * 255)


def test_hook_names_in_config_are_bounded(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"webhooks:\n  {'h' * 256}: {{auth: none}}\n")
    with pytest.raises(ConfigError, match="the hook name is 256 characters long; the limit is 255"):
        load_definitions({"h" * 256: {"auth": "none"}}, str(config), environ={})
    assert load_definitions({"h" * 255: {"auth": "none"}}, None, environ={})


def test_api_key_names_and_scopes_are_bounded():
    with pytest.raises(ApiKeyError, match="'name' is 256 characters long; the limit is 255"):
        new_api_key("k" * 256)
    with pytest.raises(ApiKeyError, match="an item of 'triggers' is 512 characters"):
        new_api_key("k", triggers=["t" * (MAX_REF_CHARS + 1)])
    assert new_api_key("k" * 255, webhooks=["w" * 255])[0].name == "k" * 255


def test_datastore_key_names_are_bounded():
    with pytest.raises(DatastoreError, match="is 513 characters long; the limit is 512"):
        check_name("k" * (MAX_KEY_NAME_CHARS + 1))
    assert check_name("k" * MAX_KEY_NAME_CHARS)


def test_check_length():
    assert check_length("x" * 255, "thing") == "x" * 255
    with pytest.raises(NameTooLong, match="thing is 256 characters long; the limit is 255"):
        check_length("x" * 256, "thing")
