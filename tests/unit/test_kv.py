"""st2kv in templates (pure): the lookup, decrypt_kv, scopes and the pair record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet

from engine.errors import SandboxViolation, TemplateError
from engine.model.kv import (
    SYSTEM_SCOPE,
    USER_SCOPE,
    DatastoreError,
    KeyValuePair,
    parse_scope,
)
from engine.rules import load_rule, render_parameters
from engine.rules.kvlookup import SecretValue, build_st2kv
from engine.rules.templates import compile_template, render_shell_command
from engine.secrets.encryption import DatastoreCipher

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
CIPHER = DatastoreCipher([Fernet.generate_key()], "test key")


def st2kv(system=None, user=None):
    return build_st2kv((system or {}).items(), (user or {}).items())


def secret(plaintext: str) -> SecretValue:
    return SecretValue(CIPHER.encrypt(plaintext), CIPHER.decrypt)


def render(source: str, kv) -> object:
    return compile_template(source).render({"trigger": {}, "st2kv": kv})


def test_system_and_user_values_render_natively():
    kv = st2kv({"host": "db1", "port": 5432}, {"nick": "mona"})
    assert render("{{ st2kv.system.host }}", kv) == "db1"
    assert render("{{ st2kv.system.port }}", kv) == 5432
    assert render("{{ st2kv.user.nick }}@{{ st2kv.system.host }}", kv) == "mona@db1"
    assert render("{{ st2kv.system['host'] }}", kv) == "db1"


def test_missing_key_reads_empty_and_dotted_names_resolve_step_by_step():
    kv = st2kv({"app.token": "t1", "app.db.url": "u", "app": "exact"})
    assert render("{{ st2kv.system.nothing }}", kv) == ""
    assert render("{{ st2kv.system['app.token'] }}", kv) == "t1"
    assert render("{{ st2kv.system.app.db.url }}", st2kv({"app.db.url": "u"})) == "u"
    # An exact name wins over the dotted prefix.
    assert render("{{ st2kv.system.app }}", kv) == "exact"


def test_secret_renders_as_ciphertext_and_decrypt_kv_reveals_it():
    value = secret("hunter2")
    kv = st2kv({"pw": value})
    shown = render("{{ st2kv.system.pw }}", kv)
    assert shown == str(value) and "hunter2" not in shown
    assert type(shown) is str  # the SecretValue does not leave the template
    assert render("{{ st2kv.system.pw | decrypt_kv }}", kv) == "hunter2"
    assert render("pw={{ st2kv.system.pw }}", kv) == f"pw={value}"
    # Shell commands quote the revealed plaintext like any inserted value.
    assert (
        render_shell_command("echo {{ st2kv.system.pw | decrypt_kv }}", {"st2kv": kv})
        == "echo hunter2"
    )


def test_the_sandbox_keeps_templates_away_from_the_decryptor():
    kv = st2kv({"pw": secret("hunter2")})
    with pytest.raises(SandboxViolation):
        render("{{ st2kv.system.pw._reveal(st2kv.system.pw) }}", kv)


def test_decrypt_kv_never_decrypts_a_copied_ciphertext():
    # A payload holding a datastore ciphertext gets it back as it is, not decrypted.
    token = CIPHER.encrypt("hunter2")
    context = {"trigger": {"x": token}, "st2kv": st2kv()}
    assert compile_template("{{ trigger.x | decrypt_kv }}").render(context) == token
    assert render("{{ 'plain' | decrypt_kv }}", st2kv()) == "plain"


def test_decrypt_kv_of_a_missing_key_names_the_problem():
    with pytest.raises(TemplateError, match="does not exist"):
        render("{{ st2kv.system.nope | decrypt_kv }}", st2kv())


def test_decrypt_kv_with_the_wrong_key_is_a_template_error_without_plaintext():
    other = DatastoreCipher([Fernet.generate_key()], "other key")
    kv = st2kv({"pw": SecretValue(CIPHER.encrypt("hunter2"), other.decrypt)})
    with pytest.raises(TemplateError, match="another key") as caught:
        render("{{ st2kv.system.pw | decrypt_kv }}", kv)
    assert "hunter2" not in str(caught.value)


RULE = """\
name: deploy_to_target
pack: t
trigger: {type: core.st2.webhook, parameters: {url: deploy}}
criteria:
  trigger.body.env:
    type: equals
    pattern: "{{ st2kv.system.target_env }}"
action:
  ref: core.local
  parameters:
    cmd: "deploy --host {{ st2kv.system.host }}"
    password: "{{ st2kv.system.pw | decrypt_kv }}"
    shown: "{{ st2kv.system.pw }}"
"""


def test_rule_criteria_and_parameters_read_st2kv():
    rule = load_rule(RULE)
    kv = st2kv({"target_env": "prod", "host": "db1", "pw": secret("hunter2")})
    assert rule.evaluate({"body": {"env": "prod"}}, kv=kv).matched
    assert not rule.evaluate({"body": {"env": "dev"}}, kv=kv).matched
    params = render_parameters(rule, {"body": {"env": "prod"}}, kv=kv)
    assert params["cmd"] == "deploy --host db1"
    assert params["password"] == "hunter2"
    assert params["shown"] != "hunter2" and CIPHER.decrypt(params["shown"]) == "hunter2"


@pytest.mark.parametrize(
    ("given", "full"),
    [
        ("system", SYSTEM_SCOPE),
        ("user", USER_SCOPE),
        (SYSTEM_SCOPE, SYSTEM_SCOPE),
        (USER_SCOPE, USER_SCOPE),
        (None, SYSTEM_SCOPE),
    ],
)
def test_scopes_short_and_full(given, full):
    assert parse_scope(given) == full


def test_all_scope_only_where_allowed():
    assert parse_scope("all", allow_all=True) is None
    with pytest.raises(DatastoreError, match="unknown datastore scope 'all'"):
        parse_scope("all")
    with pytest.raises(DatastoreError, match="system, user"):
        parse_scope("global")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "non-empty name"),
        ({"name": "a/b"}, "'/'"),
        ({"name": "a\nb"}, "control character"),
        ({"value": 5}, "must be a string"),
        ({"value": "nul\x00"}, "NUL"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": "60"}, "ttl"),
        ({"scope": "user"}, "needs a user name"),
    ],
)
def test_invalid_pairs_are_refused(kwargs, message):
    fields = {"name": "k", "value": "v", **kwargs}
    with pytest.raises(DatastoreError, match=message):
        KeyValuePair.new(fields.pop("name"), fields.pop("value"), now=NOW, **fields)


def test_api_shape_hides_or_reveals_a_secret():
    pair = KeyValuePair.new("pw", "CIPHERTEXT", secret=True, ttl=60, now=NOW)
    hidden = pair.to_api()
    assert hidden["value"] == "CIPHERTEXT" and hidden["encrypted"] is True
    assert hidden["expire_timestamp"] == "2025-01-02T03:05:05Z"
    assert (hidden["scope"], hidden["user"], hidden["uid"]) == (
        "st2kv.system",
        None,
        "key_value_pair:st2kv.system:pw",
    )
    shown = pair.to_api(plaintext="hunter2")
    assert (shown["value"], shown["encrypted"], shown["secret"]) == ("hunter2", False, True)
    mine = KeyValuePair.new("k", "v", scope="user", user="mona", now=NOW).to_api()
    assert (mine["scope"], mine["user"], mine["encrypted"]) == ("st2kv.user", "mona", False)
    assert pair.expire_timestamp == NOW + timedelta(seconds=60)
