"""Packs in StackStorm's layout: loading, runner parameter merge, parameter preparation."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from engine.errors import ActionError, PackError, RuleLoadError
from engine.packs import MISSING, RETRY_NEVER, RETRY_ONCE, PackSet, load_packs
from engine.packs.config import render_config
from engine.rules.kvlookup import SecretValue, build_st2kv
from engine.runners import default_runners

# The pack core checks actions against the runner registry it is given.
RUNNERS = default_runners()

PACK_YAML = """\
---
name: {name}
description: A test pack.
version: 0.1.0
author: Tester
email: tester@example.com
keywords: [test]
"""

PYTHON_ACTION = """\
---
name: greet
runner_type: python-script
description: Greets someone.
enabled: true
entry_point: greet.py
retry: never
parameters:
  who:
    type: string
    description: Who to greet.
    required: true
  times:
    type: integer
    default: 1
  token:
    type: string
    secret: true
  style:
    type: string
    enum: [plain, loud]
    default: plain
  timeout:
    default: 30
    description: Greeting should be quick.
"""

SCRIPT_ACTION = """\
---
name: copy
runner_type: local-shell-script
entry_point: copy.sh
parameters:
  source:
    type: string
    position: 0
    required: true
  target:
    type: string
    position: 1
    required: true
  verbose:
    type: boolean
    default: false
"""

RULE = """\
---
name: on_push
description: Greet on push.
trigger:
  type: core.st2.webhook
  parameters:
    url: github
criteria:
  trigger.body.ref:
    type: equals
    pattern: refs/heads/main
action:
  ref: {pack}.greet
  parameters:
    who: "{{{{ trigger.body.pusher }}}}"
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def make_pack(root: Path, name: str = "demo", *, actions: dict[str, str] | None = None) -> Path:
    pack = root / name
    write(pack / "pack.yaml", PACK_YAML.format(name=name))
    for file, text in (actions or {}).items():
        write(pack / "actions" / file, text)
    return pack


def full_pack(root: Path, name: str = "demo") -> Path:
    pack = make_pack(root, name, actions={"greet.yaml": PYTHON_ACTION, "copy.yaml": SCRIPT_ACTION})
    write(
        pack / "actions" / "greet.py",
        "from engine.runners.python_action import Action\n\n\nclass Greet(Action):\n"
        "    def run(self, who, **kw):\n        return f'hi {who}'\n",
    )
    write(pack / "actions" / "copy.sh", '#!/bin/sh\ncp "$1" "$2"\n')
    write(pack / "rules" / "on_push.yaml", RULE.format(pack=name))
    write(pack / "webhooks" / "github.yaml", "name: /github/\nauth:\n  type: hmac\n")
    return pack


def load_one(root: Path) -> PackSet:
    packs, errors = load_packs([root], runners=RUNNERS)
    assert errors == []
    return packs


def only_error(root: Path, *dirs: Path) -> PackError:
    _, errors = load_packs([root, *dirs], runners=RUNNERS)
    assert len(errors) == 1, errors
    return errors[0]


def line_of(file: Path, needle: str) -> int:
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {file}")


# --- loading -------------------------------------------------------------------------


def test_stackstorm_layout_pack_loads_actions_rules_and_webhooks(tmp_path: Path) -> None:
    pack_dir = full_pack(tmp_path)
    packs = load_one(tmp_path)

    pack = packs.packs["demo"]
    assert pack.path == str(pack_dir)
    assert sorted(pack.actions) == ["copy", "greet"]
    greet = packs.action("demo.greet")
    assert greet.runner_type == "python-script"
    assert greet.entry_point == str(pack_dir / "actions" / "greet.py")
    assert greet.retry == RETRY_NEVER
    assert greet.source == str(pack_dir / "actions" / "greet.yaml")
    copy = packs.action("demo.copy")
    assert copy.runner_type == "local-shell-script"
    assert copy.positions == {"source": 0, "target": 1}
    assert copy.retry == RETRY_ONCE

    [rule] = pack.rules
    assert (rule.ref, rule.action_ref) == ("demo.on_push", "demo.greet")
    assert packs.rules() == [rule]
    hook = pack.webhooks["github"]
    assert (hook.pack, dict(hook.settings)) == ("demo", {"auth": {"type": "hmac"}})
    assert hook.source == str(pack_dir / "webhooks" / "github.yaml")
    assert packs.webhooks() == {"github": hook}
    assert set(pack.files) >= {
        "pack.yaml",
        "actions/greet.yaml",
        "actions/greet.py",
        "actions/copy.sh",
        "rules/on_push.yaml",
        "webhooks/github.yaml",
    }


def test_api_shapes_follow_stackstorm(tmp_path: Path) -> None:
    full_pack(tmp_path)
    packs = load_one(tmp_path)
    action = packs.action("demo.greet").to_api()
    assert action["ref"] == "demo.greet"
    assert action["uid"] == "action:demo:greet"
    assert action["entry_point"] == "greet.py"
    assert action["runner_type"] == "python-script"
    assert action["metadata_file"] == "actions/greet.yaml"
    # The API returns the action's own parameters; clients merge the runner's themselves.
    assert set(action["parameters"]) == {"who", "times", "token", "style", "timeout"}
    assert len(action["id"]) == 24 and action["id"] == packs.action("demo.greet").to_api()["id"]
    pack = packs.packs["demo"].to_api()
    assert (pack["ref"], pack["version"], pack["author"]) == ("demo", "0.1.0", "Tester")
    assert pack["id"] != action["id"] and pack["keywords"] == ["test"]


def test_merged_parameters_inherit_runner_defaults(tmp_path: Path) -> None:
    full_pack(tmp_path)
    packs = load_one(tmp_path)
    greet = packs.action("demo.greet")
    # python-script declares log_level (default DEBUG); the action does not mention it.
    assert greet.parameters["log_level"]["default"] == "DEBUG"
    assert greet.parameter_specs["log_level"].runner_parameter
    copy = packs.action("demo.copy")
    assert copy.parameters["kwarg_op"]["default"] == "--"
    assert copy.timeout == 60.0
    assert copy.parameter_specs["verbose"].default is False
    assert copy.parameter_specs["cwd"].default is MISSING


def test_action_may_override_runner_default_and_description(tmp_path: Path) -> None:
    full_pack(tmp_path)
    greet = load_one(tmp_path).action("demo.greet")
    timeout = greet.parameters["timeout"]
    assert timeout["default"] == 30
    assert timeout["description"] == "Greeting should be quick."
    assert timeout["type"] == "integer"  # still the runner's
    assert greet.timeout == 30.0


def test_restating_a_runner_attribute_unchanged_is_allowed(tmp_path: Path) -> None:
    make_pack(
        tmp_path,
        actions={
            "a.yaml": """\
            name: a
            runner_type: local-shell-cmd
            parameters:
              timeout: {type: integer, default: 5}
            """
        },
    )
    assert load_one(tmp_path).action("demo.a").timeout == 5.0


def test_overriding_a_runner_parameter_type_fails_with_file_and_line(tmp_path: Path) -> None:
    pack = make_pack(
        tmp_path,
        actions={
            "bad.yaml": """\
            name: bad
            runner_type: local-shell-cmd
            parameters:
              timeout:
                type: string
                default: "10"
            """
        },
    )
    error = only_error(tmp_path)
    file = pack / "actions" / "bad.yaml"
    assert isinstance(error, PackError)
    assert (error.file, error.line) == (str(file), line_of(file, "type: string"))
    assert "runner 'local-shell-cmd'" in str(error) and "not 'type'" in str(error)
    assert str(error).startswith(f"{file}:{error.line}:")


def test_unknown_action_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    pack = make_pack(
        tmp_path,
        actions={"a.yaml": "name: a\nrunner_type: noop\ndescripton: typo\n"},
    )
    error = only_error(tmp_path)
    assert "unknown action field 'descripton'; did you mean 'description'?" in str(error)
    assert (error.file, error.line, error.column) == (str(pack / "actions" / "a.yaml"), 3, 1)


def test_unknown_parameter_attribute_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    make_pack(
        tmp_path,
        actions={
            "a.yaml": """\
            name: a
            runner_type: noop
            parameters:
              x:
                type: string
                requried: true
            """
        },
    )
    error = only_error(tmp_path)
    assert "unknown parameter attribute 'requried'; did you mean 'required'?" in str(error)
    assert error.line == 6 and error.field == "parameters.x.requried"


def test_unknown_runner_type_lists_the_known_runners(tmp_path: Path) -> None:
    make_pack(tmp_path, actions={"a.yaml": "name: a\nrunner_type: local-shell-cmdd\n"})
    error = only_error(tmp_path)
    message = str(error)
    assert "unknown runner_type 'local-shell-cmdd'; did you mean 'local-shell-cmd'?" in message
    for runner in ("local-shell-cmd", "local-shell-script", "python-script", "http-request"):
        assert runner in message
    assert error.line == 2


def test_script_runner_needs_an_existing_entry_point_inside_the_pack(tmp_path: Path) -> None:
    make_pack(
        tmp_path,
        actions={
            "none.yaml": "name: none\nrunner_type: python-script\n",
            "gone.yaml": "name: gone\nrunner_type: local-shell-script\nentry_point: gone.sh\n",
            "out.yaml": "name: out\nrunner_type: local-shell-script\nentry_point: ../../x.sh\n",
        },
    )
    write(tmp_path / "x.sh", "#!/bin/sh\n")
    _, errors = load_packs([tmp_path], runners=RUNNERS)
    messages = sorted(str(e) for e in errors)
    assert len(messages) == 3
    assert any("gone.yaml:3" in m and "entry point 'gone.sh' not found" in m for m in messages)
    assert any("none.yaml" in m and "set entry_point" in m for m in messages)
    assert any("out.yaml:3" in m and "outside the pack directory" in m for m in messages)


def test_broken_action_file_stops_neither_the_other_action_nor_the_other_pack(
    tmp_path: Path,
) -> None:
    make_pack(
        tmp_path,
        "first",
        actions={
            "broken.yaml": "name: broken\nrunner_type: noop\nparameters: [unclosed\n",
            "fine.yaml": "name: fine\nrunner_type: noop\n",
        },
    )
    make_pack(tmp_path, "second", actions={"ok.yaml": "name: ok\nrunner_type: noop\n"})
    broken_pack = tmp_path / "third"
    write(broken_pack / "pack.yaml", "name: third\ndescription: x\nversion: 1.0.0\n")
    packs, errors = load_packs([tmp_path], runners=RUNNERS)
    assert sorted(packs.packs) == ["core", "first", "second"]  # core: built in
    assert [a.ref for a in packs.actions() if a.pack != "core"] == ["first.fine", "second.ok"]
    assert len(errors) == 2
    yaml_error = next(e for e in errors if "broken.yaml" in str(e))
    assert "invalid YAML" in str(yaml_error) and yaml_error.line is not None
    meta_error = next(e for e in errors if "third" in str(e))
    assert "missing required field 'author'" in str(meta_error)
    assert packs.errors == tuple(errors)


def test_duplicate_pack_ref_across_directories_names_both_places(tmp_path: Path) -> None:
    first_root, second_root = tmp_path / "a", tmp_path / "b"
    make_pack(first_root, "demo", actions={"one.yaml": "name: one\nrunner_type: noop\n"})
    make_pack(second_root, "demo", actions={"two.yaml": "name: two\nrunner_type: noop\n"})
    packs, errors = load_packs([first_root, second_root], runners=RUNNERS)
    assert [a.ref for a in packs.actions() if a.pack == "demo"] == ["demo.one"]
    [error] = errors
    assert str(first_root / "demo") in str(error)
    assert error.file == str(second_root / "demo" / "pack.yaml")


def test_pack_metadata_is_checked(tmp_path: Path) -> None:
    write(
        tmp_path / "p" / "pack.yaml",
        "name: My Pack\ndescription: d\nversion: 0.2\nauthor: me\nlicence: MIT\n",
    )
    error = only_error(tmp_path)
    assert "unknown pack.yaml field 'licence'" in str(error) and error.line == 5
    write(tmp_path / "p" / "pack.yaml", "name: My Pack\ndescription: d\nversion: 0.2\nauthor: me\n")
    assert "add a 'ref' field" in str(only_error(tmp_path))
    write(
        tmp_path / "p" / "pack.yaml",
        "name: My Pack\nref: my_pack\ndescription: d\nversion: 0.2\nauthor: me\n",
    )
    pack = load_one(tmp_path).packs["my_pack"]
    assert (pack.name, pack.metadata["version"]) == ("My Pack", "0.2.0")


def test_rule_claiming_another_pack_is_refused(tmp_path: Path) -> None:
    pack = make_pack(tmp_path)
    rule = write(pack / "rules" / "r.yaml", RULE.format(pack="demo") + "pack: other\n")
    packs, errors = load_packs([tmp_path], runners=RUNNERS)
    assert packs.rules() == []
    [error] = errors
    assert error.file == str(rule) and "lives in pack 'demo'" in str(error)


def test_rule_errors_come_with_their_file(tmp_path: Path) -> None:
    pack = make_pack(tmp_path)
    write(pack / "rules" / "r.yaml", "name: r\ntrigger: {type: x}\naction: {reff: demo.a}\n")
    _, errors = load_packs([tmp_path], runners=RUNNERS)
    # Both problems of the one line, each with the file.
    assert [(type(e), e.file, e.line) for e in errors] == [
        (RuleLoadError, str(pack / "rules" / "r.yaml"), 3)
    ] * 2
    assert "missing required field 'ref'" in str(errors[0])
    assert "unknown field 'reff'; did you mean 'ref'?" in str(errors[1])


def test_webhook_names_are_unique_across_packs(tmp_path: Path) -> None:
    for name in ("one", "two"):
        pack = make_pack(tmp_path, name)
        write(pack / "webhooks" / "hook.yaml", f"name: shared\nowner: {name}\n")
    packs, errors = load_packs([tmp_path], runners=RUNNERS)
    assert packs.webhooks()["shared"].settings == {"owner": "one"}
    assert packs.packs["two"].webhooks == {}
    [error] = errors
    assert "webhook 'shared' is already defined in pack 'one'" in str(error)


def test_duplicate_positions_are_refused(tmp_path: Path) -> None:
    make_pack(
        tmp_path,
        actions={
            "a.yaml": """\
            name: a
            runner_type: noop
            parameters:
              x: {type: string, position: 0}
              y: {type: string, position: 0}
            """
        },
    )
    assert "'x' and 'y' both have position 0" in str(only_error(tmp_path))


def test_pack_config_gets_schema_defaults_and_is_validated(tmp_path: Path) -> None:
    pack = make_pack(tmp_path)
    write(
        pack / "config.schema.yaml",
        """\
        api_url: {type: string, default: "https://api.example.com"}
        retries: {type: integer, required: true}
        """,
    )
    configs = tmp_path.parent / f"{tmp_path.name}-configs"
    config_file = write(configs / "demo.yaml", "retries: 3\nextra: kept\n")
    packs, errors = load_packs([tmp_path], configs_dir=configs, runners=RUNNERS)
    assert errors == []
    assert packs.packs["demo"].config == {
        "retries": 3,
        "extra": "kept",
        "api_url": "https://api.example.com",
    }
    write(config_file, "retries: many\n")
    _, errors = load_packs([tmp_path], configs_dir=configs, runners=RUNNERS)
    [error] = errors
    assert error.file == str(config_file) and error.line == 1
    assert "config item 'retries': expected integer, got 'many'" in str(error)


def loaded_config(tmp_path: Path, schema: str, values: str):
    """(config values, schema items) of the pack "demo" with these two files."""
    pack = make_pack(tmp_path)
    write(pack / "config.schema.yaml", schema)
    configs = tmp_path.parent / f"{tmp_path.name}-configs"
    write(configs / "demo.yaml", values)
    packs, errors = load_packs([tmp_path], configs_dir=configs, runners=RUNNERS)
    assert errors == []  # templates, at any depth, are not type-checked at load time
    loaded = packs.packs["demo"]
    return loaded.config, loaded.config_items


def config_with_templates(tmp_path: Path, values: str):
    schema = """\
        api_url: {type: string, required: true}
        retries: {type: integer, default: 1}
        token: {type: string, secret: true, required: true}
        verbose: {type: boolean}
        """
    return loaded_config(tmp_path, schema, values)


def kv_view(system: dict, user: dict | None = None):
    return build_st2kv(system.items(), (user or {}).items())


def test_pack_config_templates_render_from_the_datastore_when_an_action_runs(tmp_path):
    config, schema = config_with_templates(
        tmp_path,
        """\
        api_url: "https://{{ st2kv.system.api_host }}/v1"
        retries: "{{ st2kv.system.retries }}"
        token: "{{ st2kv.system.token }}"
        verbose: "{{ st2kv.user.verbose }}"
        nested: {region: "{{ st2kv.system.region }}", fixed: 7}
        plain: unchanged
        """,
    )
    secret = SecretValue("gAAAA-ciphertext", lambda text: "plain-token")
    kv = kv_view(
        {"api_host": "api.example.com", "retries": "3", "token": secret, "region": "eu-1"},
        {"verbose": "true"},
    )
    rendered = render_config(config, schema, kv, "demo")
    assert rendered == {
        "api_url": "https://api.example.com/v1",
        "retries": 3,  # the datastore's "3", read as the schema's integer
        "token": "plain-token",  # a secret item is decrypted, as StackStorm does
        "verbose": True,
        "nested": {"region": "eu-1", "fixed": 7},
        "plain": "unchanged",
    }
    # decrypt_kv spelled out gives the same plaintext.
    config = {**config, "token": "{{ st2kv.system.token | decrypt_kv }}"}
    assert render_config(config, schema, kv, "demo")["token"] == "plain-token"
    # A changed key is seen by the next rendering: nothing is cached in the pack.
    kv2 = kv_view({"api_host": "other.example.com", "retries": "3", "token": secret}, {})
    again = render_config(config, schema, kv2, "demo")
    assert again["api_url"] == "https://other.example.com/v1"
    # A missing key renders nothing: the item is unset, as in StackStorm.
    assert again["verbose"] is None


def test_pack_config_template_errors_name_the_pack_and_item_but_not_the_value(tmp_path):
    config, schema = config_with_templates(
        tmp_path,
        """\
        api_url: x
        retries: "{{ st2kv.system.retries }}"
        token: "{{ st2kv.system.token }}"
        """,
    )
    secret = SecretValue("gAAAA-ciphertext", lambda text: "plain-token")
    wrong_type = kv_view({"retries": "several", "token": secret})
    with pytest.raises(ActionError) as raised:
        render_config(config, schema, wrong_type, "demo")
    assert "pack 'demo'" in str(raised.value)
    # A rendered value is never shown: it may be a secret read through decrypt_kv.
    assert "config item 'retries': expected integer, got a string" in str(raised.value)
    assert "several" not in str(raised.value)

    config = {**config, "retries": 2, "token": "{{ st2kv.system.missing | decrypt_kv }}"}
    with pytest.raises(ActionError) as raised:
        render_config(config, schema, kv_view({}), "demo")
    assert "pack 'demo' config item 'token'" in str(raised.value)
    assert "does not exist" in str(raised.value)

    # A required item whose key is missing says so.
    config = {**config, "token": "{{ st2kv.system.token }}"}
    with pytest.raises(ActionError) as raised:
        render_config(config, schema, kv_view({}), "demo")
    assert "config item 'token' is required but its template rendered nothing" in str(raised.value)
    # A secret item of the wrong type is named, its value never shown.
    secret_number = SecretValue("gAAAA-2", lambda text: "not-a-number-secret")
    with pytest.raises(ActionError) as raised:
        render_config(
            {**config, "retries": "{{ st2kv.system.n }}"},
            {**schema, "retries": dataclasses.replace(schema["retries"], secret=True)},
            kv_view({"n": secret_number, "token": secret}),
            "demo",
        )
    assert "config item 'retries': expected integer, got a string" in str(raised.value)
    assert "not-a-number-secret" not in str(raised.value)


def test_pack_config_secrecy_and_types_follow_each_value_s_own_schema(tmp_path):
    schema = """\
        auth:
          type: object
          properties:
            username: {type: string}
            password: {type: string, secret: true}
            port: {type: integer}
        tokens:
          type: array
          items: {type: string, secret: true}
        plain: {type: string}
        port: {type: integer}
        """
    values = """\
        auth:
          username: "{{ st2kv.system.other }}"
          password: "{{ st2kv.system.pw }}"
          port: "{{ st2kv.system.port }}"
        tokens: ["{{ st2kv.system.pw }}", "{{ st2kv.system.other }}"]
        plain: "{{ st2kv.system.pw }}"
        port: "{{ st2kv.system.pw | decrypt_kv }}"
        """
    # Nested templates under typed properties are not type-checked at load time.
    config, items = loaded_config(tmp_path, schema, values)
    kv = kv_view(
        {
            "pw": SecretValue("cipher-pw", lambda text: "hunter2-plain"),
            "other": SecretValue("cipher-other", lambda text: "other-plain"),
            "port": "5432",
        }
    )
    rendered = render_config({**config, "port": 8080}, items, kv, "demo")
    assert rendered["auth"] == {
        "username": "cipher-other",  # not declared secret: the ciphertext, as in StackStorm
        "password": "hunter2-plain",
        "port": 5432,  # read as JSON by its own type, at depth
    }
    assert rendered["tokens"] == ["hunter2-plain", "other-plain"]  # items: secret
    assert rendered["plain"] == "cipher-pw"
    # A secret revealed with decrypt_kv into an item of the wrong type is never shown.
    with pytest.raises(ActionError) as raised:
        render_config(config, items, kv, "demo")
    assert "config item 'port': expected integer, got a string" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_pack_config_text_is_read_as_json_only_for_non_string_items(tmp_path):
    schema = "code: {type: string}\ncount: {type: integer}\n"
    values = 'code: "{{ st2kv.system.v }}"\ncount: "{{ st2kv.system.v }}"\n'
    config, items = loaded_config(tmp_path, schema, values)
    kv = kv_view({"v": "7"})
    rendered = render_config(config, items, kv, "demo")
    # A string item keeps the text; an integer item reads it as JSON.
    assert rendered == {"code": "7", "count": 7}


def test_pack_config_load_errors_never_show_secrets_nested_in_lists_or_maps(tmp_path):
    pack = make_pack(tmp_path)
    write(
        pack / "config.schema.yaml",
        """\
        tokens:
          type: array
          items: {type: string, secret: true, minLength: 20}
        by_host:
          type: object
          additionalProperties: {type: integer, secret: true}
        """,
    )
    configs = tmp_path.parent / f"{tmp_path.name}-configs"
    config_file = write(configs / "demo.yaml", "tokens: [hunter2-secret]\n")
    _, errors = load_packs([tmp_path], configs_dir=configs, runners=RUNNERS)
    [error] = errors
    assert "config item 'tokens.0'" in str(error) and "hunter2" not in str(error)
    write(config_file, "by_host: {db: hunter2-x}\n")
    _, errors = load_packs([tmp_path], configs_dir=configs, runners=RUNNERS)
    [error] = errors
    assert "config item 'by_host.db': expected integer, got a string" in str(error)
    assert "hunter2" not in str(error)


def test_pack_config_values_under_pattern_properties_follow_their_pattern_s_schema(tmp_path):
    schema = """\
        endpoints:
          type: object
          patternProperties:
            "^token_": {type: string, secret: true}
            "^port_": {type: integer}
          additionalProperties: {type: string}
        """
    values = (
        'endpoints: {token_a: "{{ st2kv.system.pw }}", port_a: "{{ st2kv.system.port }}",'
        ' note: "{{ st2kv.system.pw }}"}\n'
    )
    config, items = loaded_config(tmp_path, schema, values)
    kv = kv_view({"pw": SecretValue("cipher-pw", lambda text: "plain-pw"), "port": "8443"})
    rendered = render_config(config, items, kv, "demo")
    assert rendered["endpoints"] == {
        "token_a": "plain-pw",  # secret by its pattern
        "port_a": 8443,  # integer by its pattern
        "note": "cipher-pw",  # additionalProperties: not secret
    }


# --- prepare_parameters ------------------------------------------------------------------


@pytest.fixture
def packs(tmp_path: Path) -> PackSet:
    full_pack(tmp_path)
    return load_one(tmp_path)


def test_prepare_applies_defaults_and_splits_runner_from_action_parameters(
    packs: PackSet,
) -> None:
    runner_values, action_values = packs.action("demo.greet").prepare_parameters({"who": "ann"})
    assert action_values == {"who": "ann", "times": 1, "style": "plain"}
    assert runner_values == {"timeout": 30, "log_level": "DEBUG", "debug": False}
    runner_values, action_values = packs.action("demo.copy").prepare_parameters(
        {"source": "a", "target": "b", "cwd": "/tmp"}
    )
    assert action_values == {"source": "a", "target": "b", "verbose": False}
    assert runner_values["cwd"] == "/tmp" and runner_values["kwarg_op"] == "--"


def test_prepare_refuses_a_missing_required_parameter(packs: PackSet) -> None:
    with pytest.raises(ActionError, match=r"^parameter 'who': required by action 'demo.greet'"):
        packs.action("demo.greet").prepare_parameters({"times": 2})


def test_prepare_refuses_a_wrong_type_naming_the_parameter(packs: PackSet) -> None:
    with pytest.raises(ActionError) as caught:
        packs.action("demo.greet").prepare_parameters({"who": "ann", "timeout": "abc"})
    assert str(caught.value) == "parameter 'timeout': expected integer, got 'abc'"
    with pytest.raises(ActionError, match="parameter 'times': expected integer, got True"):
        packs.action("demo.greet").prepare_parameters({"who": "ann", "times": True})


def test_prepare_checks_enums(packs: PackSet) -> None:
    action = packs.action("demo.greet")
    assert action.prepare_parameters({"who": "a", "style": "loud"})[1]["style"] == "loud"
    with pytest.raises(ActionError) as caught:
        action.prepare_parameters({"who": "a", "style": "quiet"})
    assert str(caught.value) == "parameter 'style': expected one of plain, loud, got 'quiet'"


def test_prepare_refuses_unknown_parameters_with_a_suggestion(packs: PackSet) -> None:
    with pytest.raises(ActionError, match=r"has no parameter 'whoo'; did you mean 'who'\?"):
        packs.action("demo.greet").prepare_parameters({"whoo": "ann"})


def test_prepare_refuses_overriding_an_immutable_parameter(packs: PackSet) -> None:
    del packs  # the shipped core.echo declares cmd immutable
    core, errors = load_packs([], runners=RUNNERS)
    assert errors == []
    echo = core.action("core.echo")
    with pytest.raises(ActionError, match=r"^parameter 'cmd': immutable in action 'core.echo'"):
        echo.prepare_parameters({"message": "hi", "cmd": "rm -rf /"})
    # Passing exactly the default is not an override.
    runner_values, _ = echo.prepare_parameters({"message": "hi", "cmd": "echo {{ message }}"})
    assert runner_values["cmd"] == "echo {{ message }}"


def test_secret_parameters_are_declared_and_not_shown_in_errors(packs: PackSet) -> None:
    action = packs.action("demo.greet")
    assert "token" in action.secret_parameters
    assert "who" not in action.secret_parameters
    with pytest.raises(ActionError) as caught:
        action.prepare_parameters({"who": "a", "token": 12345})
    assert str(caught.value) == "parameter 'token': expected string, got an integer"


def test_prepare_renders_before_validating(packs: PackSet) -> None:
    def render(values: dict) -> dict:
        return {**values, "times": int(values["times"]) + 1}

    _, action_values = packs.action("demo.greet").prepare_parameters(
        {"who": "a", "times": "2"}, render=render
    )
    assert action_values["times"] == 3


def test_unknown_action_ref_suggests_a_close_one(packs: PackSet) -> None:
    with pytest.raises(ActionError, match=r"unknown action 'demo.gret'; did you mean 'demo.greet'"):
        packs.action("demo.gret")
    with pytest.raises(ActionError, match=r"unknown action 'nopack\.x'"):
        packs.action("nopack.x")


# --- the shipped core pack ------------------------------------------------------------


def test_shipped_core_pack_loads_with_the_expected_runners() -> None:
    packs, errors = load_packs([], runners=RUNNERS)
    assert errors == []
    runners = {a.ref: a.runner_type for a in packs.actions() if a.pack == "core"}
    assert runners == {
        "core.local": "local-shell-cmd",
        "core.echo": "local-shell-cmd",
        "core.http": "http-request",
        "core.noop": "noop",
        "core.sendwebhook": "sendwebhook",
        "core.announcement": "announcement",
        "core.error": "local-shell-cmd",
        "core.inject_trigger": "inject-trigger",
        "core.pause": "python-script",
        "core.uuid": "python-script",
        "core.ask": "inquirer",
    }
    assert packs.action("core.local").parameter_specs["cmd"].required
    assert packs.action("core.http").parameter_specs["url"].required
    assert packs.action("core.noop").prepare_parameters({}) == ({}, {})


def test_core_sendwebhook_posts_json_and_keeps_the_signing_secret(tmp_path: Path) -> None:
    packs, _ = load_packs([], runners=RUNNERS)
    action = packs.action("core.sendwebhook")
    runner_values, action_values = action.prepare_parameters(
        {"url": "https://hooks.example.com/in", "body": {"event": "x"}, "signing": {"secret": "s"}}
    )
    assert runner_values["url"] == "https://hooks.example.com/in"
    assert action_values["method"] == "POST"
    assert action_values["signing"] == {"secret": "s", "scheme": "standard-webhooks"}
    assert "signing" in action.secret_parameters
    with pytest.raises(ActionError, match="parameter 'method': immutable"):
        action.prepare_parameters({"url": "https://x", "body": {}, "method": "GET"})
    with pytest.raises(ActionError, match="parameter 'body': expected object"):
        action.prepare_parameters({"url": "https://x", "body": "text"})
