"""Rule names as StackStorm takes them, and trigger parameters checked against their
trigger type's parameters schema, through a real app on a real SQLite file: the rules API
(create, get, replace, delete by percent-encoded ref), the rules the server loads from
files and packs, and the `hookyard rule` commands against the server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import yarl
from aiohttp.test_utils import TestClient

from engine.config import Settings
from engine.http.context import RUNTIME
from engine.model.apikeys import new_api_key
from tests.support.app import settings_for
from tests.support.packs import write_pack

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "st2_rules"

BAD_FILE_RULE = """\
name: every minute maybe
pack: t
trigger:
  type: core.st2.CronTimer
  parameters:
    minutex: 0
action: {ref: core.noop}
"""
GOOD_FILE_RULE = """\
name: st2.person.joe
pack: t
trigger: {type: core.st2.webhook, parameters: {url: person}}
action: {ref: core.noop}
"""
PACK_RULE = """\
name: wrong param
trigger:
  type: wolfpack.triggertype_with_parameters_2
  parameters:
    param1: 12345
action: {ref: core.noop}
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    packs = tmp_path / "packs"
    triggers = {
        f"triggers/{name}": (FIXTURES / "triggertypes" / name).read_text()
        for name in ("triggertype_with_parameter.yaml", "triggertype_with_parameters_2.yaml")
    }
    write_pack(packs, "wolfpack", {**triggers, "rules/wrong.yaml": PACK_RULE})
    return settings_for(
        tmp_path,
        rules={"bad": BAD_FILE_RULE, "good": GOOD_FILE_RULE},
        packs=[packs],
        auth=True,
    )


@pytest.fixture
def after_start(capsys):
    async def add_admin_key(client: TestClient) -> None:
        capsys.readouterr()
        record, key = new_api_key("admin", admin=True)
        await client.server.app[RUNTIME].store.create_api_key(record)
        client.admin = {"St2-Api-Key": key}
        client.admin_key = key

    return add_admin_key


def rule_body(name: str, **trigger) -> dict:
    return {
        "name": name,
        "pack": "ci",
        "trigger": trigger or {"type": "core.st2.webhook", "parameters": {"url": "names"}},
        "action": {"ref": "core.noop"},
    }


def encoded(ref: str) -> yarl.URL:
    return yarl.URL(f"/api/v1/rules/{quote(ref, safe='')}", encoded=True)


async def test_files_and_packs_with_unfit_trigger_parameters_are_refused(client) -> None:
    runtime = client.server.app[RUNTIME]
    assert "t.st2.person.joe" in runtime.ruleset
    assert "t.every minute maybe" not in runtime.ruleset
    assert "wolfpack.wrong param" not in runtime.ruleset
    problems = {(Path(e.file).name, e.field): str(e) for e in runtime.load_errors}
    assert "unknown parameter 'minutex'" in problems[("bad.yaml", "trigger.parameters.minutex")]
    assert "12345 is not of type 'string'" in problems[("wrong.yaml", "trigger.parameters.param1")]
    assert ":5:" in problems[("wrong.yaml", "trigger.parameters.param1")]  # param1's line


@pytest.mark.parametrize(
    "name", ["st2.person.joe", "rule space", "../../etc/passwd", "café ☕", "a/b?c=d#e%2F"]
)
async def test_any_stackstorm_name_round_trips_through_the_api(client, name) -> None:
    ref = f"ci.{name}"
    created = await client.post("/api/v1/rules", json=rule_body(name), headers=client.admin)
    assert created.status == 201, await created.text()
    assert (await created.json())["ref"] == ref
    got = await client.get(encoded(ref), headers=client.admin)
    assert got.status == 200 and (await got.json())["name"] == name
    disabled = await client.put(encoded(ref), json={"enabled": False}, headers=client.admin)
    assert disabled.status == 200 and (await disabled.json())["enabled"] is False
    # Nothing else was reached by the name's slashes or dots.
    listed = await (await client.get("/api/v1/rules", headers=client.admin)).json()
    assert [r["ref"] for r in listed if r["pack"] == "ci"] == [ref]
    deleted = await client.delete(encoded(ref), headers=client.admin)
    assert deleted.status == 204
    assert (await client.get(encoded(ref), headers=client.admin)).status == 404


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nul\x00inside", "holds a control character"),
        ("forged\nline", "holds a control character"),
        ("x" * 300, "the limit is 255 characters"),
        ("", "name must not be empty"),
    ],
)
async def test_names_that_cannot_be_stored_or_shown_are_400(client, name, expected) -> None:
    response = await client.post("/api/v1/rules", json=rule_body(name), headers=client.admin)
    assert response.status == 400
    assert expected in (await response.json())["faultstring"]
    assert (await client.get("/health")).status == 200


@pytest.mark.parametrize(
    ("trigger", "field", "expected"),
    [
        (
            {"type": "core.st2.CronTimer", "parameters": {"minutex": 0}},
            "trigger.parameters.minutex",
            "unknown parameter 'minutex'",
        ),
        ({"type": "core.st2.DateTimer", "parameters": {}}, "trigger.parameters", "'date'"),
        (
            {"type": "core.st2.IntervalTimer", "parameters": {"unit": "ages", "delta": 1}},
            "trigger.parameters.unit",
            "'ages' is not one of",
        ),
        (
            {"type": "wolfpack.triggertype_with_parameters_2", "parameters": {"param1": 1}},
            "trigger.parameters.param1",
            "1 is not of type 'string'",
        ),
        (
            {"type": "wolfpack.triggertype_with_params", "parameters": {}},
            "trigger.parameters",
            "missing required parameter 'x'",
        ),
    ],
)
async def test_unfit_trigger_parameters_are_a_400_naming_the_field(
    client, trigger, field, expected
) -> None:
    response = await client.post(
        "/api/v1/rules", json=rule_body("t", **trigger), headers=client.admin
    )
    assert response.status == 400
    message = (await response.json())["faultstring"]
    assert message.startswith(f"invalid rule: {field}: ") and expected in message
    fine = rule_body("t", type="wolfpack.triggertype_with_params", parameters={"x": "y"})
    assert (await client.post("/api/v1/rules", json=fine, headers=client.admin)).status == 201


async def test_hookyard_rule_commands_reach_odd_names(client) -> None:
    name = "../odd name/é"
    created = await client.post("/api/v1/rules", json=rule_body(name), headers=client.admin)
    assert created.status == 201
    url = str(client.make_url("/"))
    env = {**os.environ, "HOOKYARD_URL": url.rstrip("/"), "HOOKYARD_API_KEY": client.admin_key}

    def hookyard(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "engine", "rule", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    # The CLI blocks while the app serves on this loop: run it in a thread.
    got = await asyncio.to_thread(hookyard, "get", f"ci.{name}", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["name"] == name
    gone = await asyncio.to_thread(hookyard, "delete", f"ci.{name}")
    assert gone.returncode == 0, gone.stderr
    assert (await client.get(encoded(f"ci.{name}"), headers=client.admin)).status == 404


async def test_reload_keeps_the_previous_version_of_a_rule_whose_parameters_broke(
    client, tmp_path
) -> None:
    runtime = client.server.app[RUNTIME]
    good = tmp_path / "rules" / "good.yaml"
    good.write_text(GOOD_FILE_RULE.replace("url: person}", "url: person, extra: 1}"))
    response = await client.post("/api/v1/reload", headers=client.admin)
    assert response.status == 200
    report = await response.json()
    assert any(
        "good.yaml" in error and "unknown parameter 'extra'" in error for error in report["errors"]
    )
    assert str(good.resolve()) in report["kept_previous"]
    assert runtime.ruleset.get("t.st2.person.joe").trigger_parameters == {"url": "person"}


async def test_the_api_names_every_problem_of_a_rule(client) -> None:
    body = {
        **rule_body("t", type="core.st2.CronTimer", parameters={"minutex": 0}),
        "criteria": {
            "trigger.a": {"type": "matchregex", "pattern": "(unclosed"},
            "trigger.b": {"type": "equalz", "pattern": "x"},
        },
    }
    response = await client.post("/api/v1/rules", json=body, headers=client.admin)
    assert response.status == 400
    message = (await response.json())["faultstring"]
    assert "trigger.parameters.minutex: " in message
    assert 'criteria."trigger.a".pattern: matchregex pattern' in message and "position 0" in message
    assert 'criteria."trigger.b".type: unknown operator' in message
