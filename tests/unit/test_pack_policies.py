"""Pack policies (`policies/*.yaml`): loading StackStorm's own files, errors at file:line
with the field, and what the policies decide (engine.packs.policy_decisions)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.errors import PackError
from engine.packs import load_packs
from engine.packs.policy_decisions import concurrency_slots, retry_after
from engine.packs.policy_types import POLICY_TYPES
from engine.runners import default_runners
from tests.support.packs import write_pack

RUNNERS = default_runners()
FIXTURES = Path(__file__).resolve().parents[1] / "support" / "st2_policies"

WOLF_ACTION = """\
name: {name}
runner_type: local-shell-cmd
parameters:
  cmd: {{default: "true"}}
  actionstr: {{type: string}}
"""


def _wolfpacks(tmp_path: Path) -> Path:
    """The `wolfpack`/`wolfpack2` packs StackStorm's generic policy fixtures are for."""
    packs = tmp_path / "packs"
    for ref, names in (("wolfpack", ("action-1", "action-2")), ("wolfpack2", ("action-8",))):
        write_pack(
            packs,
            ref,
            {f"actions/{name}.yaml": WOLF_ACTION.format(name=name) for name in names},
        )
    for file in sorted((FIXTURES / "st2tests_generic").glob("policy_*.yaml")):
        pack = "wolfpack2" if file.name == "policy_8.yaml" else "wolfpack"
        (packs / pack / "policies").mkdir(exist_ok=True)
        shutil.copy(file, packs / pack / "policies" / file.name)
    return packs


def _messages(errors) -> str:
    return "\n".join(str(e) for e in errors)


def test_stackstorm_hello_st2_policies_load_unchanged(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    shutil.copytree(FIXTURES / "hello_st2", packs / "hello_st2")
    packset, errors = load_packs([packs], runners=RUNNERS)
    assert errors == []
    by_ref = {p.ref: p for p in packset.policies()}
    assert set(by_ref) == {"hello_st2.greet.concurrency", "hello_st2.http.retry"}
    concurrency = by_ref["hello_st2.greet.concurrency"]
    assert concurrency.policy_type == "action.concurrency"
    assert concurrency.resource_ref == "hello_st2.greet"
    # The type's default is filled in, as StackStorm's registrar does.
    assert concurrency.parameters == {"threshold": 10, "action": "delay"}
    retry = by_ref["hello_st2.http.retry"]
    assert retry.to_api()["parameters"] == {"retry_on": "timeout", "max_retry_count": 2, "delay": 2}
    assert retry.to_api()["metadata_file"] == "policies/retry_core_http_on_timeout.yaml"
    assert "policies/policy1.yaml" in packset.packs["hello_st2"].files
    assert [p.ref for p in packset.action_policies("core.http")] == ["hello_st2.http.retry"]


def test_stackstorm_generic_policies_load_and_the_mock_type_is_reported(tmp_path: Path) -> None:
    packset, errors = load_packs([_wolfpacks(tmp_path)], runners=RUNNERS)
    loaded = {p.name for p in packset.policies()}
    assert loaded == {
        "action-1.concurrency",
        "action-1.concurrency.attr",
        "action-1.retry_on_timeout",
        "action-2.concurrency.cancel",
        "action-2.concurrency.attr.cancel",
        "action-8.concurrency.attr.cancel",
    }
    # policy_2.yaml names StackStorm's test-only type: reported at its line, not loaded.
    assert len(errors) == 1, _messages(errors)
    error = errors[0]
    assert isinstance(error, PackError)
    assert error.file.endswith("policy_2.yaml") and error.line == 7
    assert error.field == "policy_type"
    assert "unknown policy_type 'action.mock_policy_error'" in str(error)
    # The pack's actions still load.
    assert {a.ref for a in packset.actions() if a.pack == "wolfpack"} == {
        "wolfpack.action-1",
        "wolfpack.action-2",
    }


def test_stackstorm_registrar_fixtures_are_refused_with_reasons(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    pack = write_pack(packs, "dummy_pack_1", {"actions/other.yaml": WOLF_ACTION.format(name="x")})
    shutil.copytree(FIXTURES / "dummy_pack_1", pack / "policies")
    packset, errors = load_packs([packs], runners=RUNNERS)
    text = _messages(errors)
    assert packset.policies() == []
    assert "policy_2.yaml:8:" in text and "unknown policy_type 'action.mock_policy_error'" in text
    assert text.count("'dummy_pack_1.local', which is not loaded") == 2
    assert "policy_1.yaml:7:" in text  # at resource_ref (after a comment line)
    assert packset.find_action("dummy_pack_1.x") is not None


def _policy_pack(tmp_path: Path, policy: str, action: str = WOLF_ACTION) -> tuple:
    packs = tmp_path / "packs"
    write_pack(
        packs,
        "p",
        {"actions/a.yaml": action.format(name="a"), "policies/limit.yaml": policy},
    )
    return load_packs([packs], runners=RUNNERS)


CONCURRENCY = """\
name: limit
resource_ref: p.a
policy_type: action.concurrency
parameters:
  threshold: {threshold}
"""


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        ("0", "parameters.threshold: 0 is less than the minimum of 1"),
        ("-3", "parameters.threshold: -3 is less than the minimum of 1"),
        ("99999999999999999999", "is greater than the maximum of 1000000"),
        ("ten", "parameters.threshold: expected integer, got a string"),
        ("1.5", "parameters.threshold: expected integer, got"),
    ],
)
def test_bad_thresholds_are_reported_at_their_line(tmp_path, threshold, expected) -> None:
    packset, errors = _policy_pack(tmp_path, CONCURRENCY.format(threshold=threshold))
    assert packset.policies() == []
    assert len(errors) == 1, _messages(errors)
    assert expected in str(errors[0])
    assert errors[0].line == 5 and errors[0].field == "parameters.threshold"
    assert packset.find_action("p.a") is not None  # the rest of the pack loaded


@pytest.mark.parametrize(
    ("policy", "line", "expected"),
    [
        (
            "name: r\nresource_ref: p.a\npolicy_type: action.retry\n"
            "parameters: {retry_on: failure, max_retry_count: 2, delay: -1}\n",
            4,
            "parameters.delay: -1 is less than the minimum of 0",
        ),
        (
            "name: r\nresource_ref: p.a\npolicy_type: action.retry\nparameters: {delay: 1}\n",
            4,
            "parameters.retry_on: missing required field 'retry_on'",
        ),
        (
            "name: r\nresource_ref: p.a\npolicy_type: action.retry\n"
            "parameters: {retry_on: sometimes}\n",
            4,
            "expected one of failure, timeout, got 'sometimes'",
        ),
        (
            "name: r\nresource_ref: p.a\npolicy_type: action.retry\n"
            "parameters: {retry_on: failure, max_retry_count: 50}\n",
            4,
            "50 is greater than the maximum of 5",
        ),
        (
            "name: r\nresource_ref: p.a\npolicy_type: action.concurrency\n"
            "parameters: {threshold: 1, spare: 2}\n",
            4,
            "unknown field 'spare'",
        ),
        ("name: r\nresource_ref: p.a\npolicy_type: action.retri\n", 3, "did you mean"),
        ("name: r\nresource_ref: nodot\npolicy_type: action.retry\n", 2, "not an action ref"),
        ("name: r\npolicy_type: action.retry\n", None, "missing required field 'resource_ref'"),
        ("name: r\nresource_ref: p.a\npolicy_type: action.retry\ncolour: red\n", 4, "colour"),
        ("name: r\npack: other\nresource_ref: p.a\npolicy_type: action.retry\n", 2, "pack"),
        ("- just\n- a list\n", None, "must be a mapping"),
    ],
)
def test_bad_policy_files_are_reported_with_the_field(tmp_path, policy, line, expected) -> None:
    packset, errors = _policy_pack(tmp_path, policy)
    assert packset.policies() == []
    assert len(errors) == 1, _messages(errors)
    assert expected in str(errors[0])
    assert str(errors[0]).startswith(str(tmp_path))
    if line is not None:
        assert errors[0].line == line


def test_attributes_must_name_parameters_of_the_action(tmp_path: Path) -> None:
    policy = (
        "name: by_host\nresource_ref: p.a\npolicy_type: action.concurrency.attr\n"
        "parameters:\n  threshold: 1\n  attributes:\n    - actionstr\n    - hostname\n"
    )
    packset, errors = _policy_pack(tmp_path, policy)
    assert packset.policies() == []
    assert len(errors) == 1
    assert "attribute 'hostname' is not a parameter of p.a" in str(errors[0])
    assert errors[0].line == 8


def test_two_policies_of_one_type_for_one_action_keep_the_first(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write_pack(
        packs,
        "p",
        {
            "actions/a.yaml": WOLF_ACTION.format(name="a"),
            "policies/one.yaml": CONCURRENCY.format(threshold=1).replace("limit", "one"),
            "policies/two.yaml": CONCURRENCY.format(threshold=2).replace("limit", "two"),
        },
    )
    packset, errors = load_packs([packs], runners=RUNNERS)
    assert [p.name for p in packset.policies()] == ["one"]
    assert "already has a action.concurrency policy (p.one" in _messages(errors)


def test_a_yaml_bomb_is_refused_by_the_safe_loader(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(7)
    )
    packset, errors = _policy_pack(tmp_path, bomb)
    assert packset.policies() == []
    assert len(errors) == 1
    assert "policies/limit.yaml" in str(errors[0])
    assert packset.find_action("p.a") is not None


def test_policy_types_match_stackstorm() -> None:
    assert set(POLICY_TYPES) == {"action.retry", "action.concurrency", "action.concurrency.attr"}
    api = POLICY_TYPES["action.retry"].to_api()
    assert api["uid"] == "policy_type:action:retry"
    assert api["parameters"]["retry_on"]["enum"] == ["failure", "timeout"]


# --- decisions -----------------------------------------------------------------------------


def _loaded(tmp_path: Path, policy: str):
    packset, errors = _policy_pack(tmp_path, policy)
    assert errors == [], _messages(errors)
    return packset.action_policies("p.a")


RETRY = (
    "name: again\nresource_ref: p.a\npolicy_type: action.retry\n"
    "parameters: {retry_on: failure, max_retry_count: 2, delay: 1.5}\n"
)


def test_retry_builds_stackstorms_context_and_stops_at_max(tmp_path: Path) -> None:
    policies = _loaded(tmp_path, RETRY)
    first = retry_after(policies, "e1", "failed", {"user": "bob", "rule": {"ref": "r.x"}})
    assert first is not None and first.delay == 1.5
    assert first.context == {
        "user": "bob",
        "rule": {"ref": "r.x"},
        "policies": {
            "retry": {"applied_policy": "p.again", "retry_count": 1, "retried_liveaction_id": "e1"}
        },
    }
    second = retry_after(policies, "e2", "failed", first.context)
    assert second is not None
    assert second.context["policies"]["retry"] == {
        "applied_policy": "p.again",
        "retry_count": 2,
        "retried_liveaction_id": "e2",
    }
    assert retry_after(policies, "e3", "failed", second.context) is None
    assert retry_after(policies, "e1", "timeout", {}) is None  # retry_on: failure only
    assert retry_after(policies, "e1", "succeeded", {}) is None
    assert retry_after(policies, "e1", "failed", {}, parent="wf") is None  # a workflow task


def test_concurrency_by_attr_keys_by_value(tmp_path: Path) -> None:
    policy = (
        "name: by\nresource_ref: p.a\npolicy_type: action.concurrency.attr\n"
        "parameters: {threshold: 2, action: cancel, attributes: [actionstr]}\n"
    )
    policies = _loaded(tmp_path, policy)
    one = concurrency_slots(policies, {"actionstr": "x", "cmd": "a"})
    same = concurrency_slots(policies, {"actionstr": "x", "cmd": "b"})
    other = concurrency_slots(policies, {"actionstr": "y"})
    assert one == same and one != other
    assert one[0].threshold == 2 and one[0].on_full == "cancel"
    assert "x" not in one[0].key  # values are hashed: they may be secret


def test_a_disabled_policy_is_listed_but_not_applied(tmp_path: Path) -> None:
    policy = CONCURRENCY.format(threshold=1) + "enabled: false\n"
    packset, errors = _policy_pack(tmp_path, policy)
    assert errors == []
    (listed,) = packset.policies()
    assert listed.to_api()["enabled"] is False
    assert packset.action_policies("p.a") == []
    assert concurrency_slots([listed], {}) == []
