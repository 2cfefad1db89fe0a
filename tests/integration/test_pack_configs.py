"""Pack configs through the real app: <configs_dir>/<pack>.yaml read at load, its
`{{ st2kv... }}` values rendered from the datastore each time a Python action runs."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from engine.config import Settings
from tests.support.app import app_client, settings_for
from tests.support.packs import pack_meta, write_pack
from tests.support.waiting import wait_execution

PACK_FILES = {
    "config.schema.yaml": """\
        api_url: {type: string, required: true}
        retries: {type: integer, default: 1}
        token: {type: string, secret: true, required: true}
        """,
    "actions/show.yaml": "name: show\nrunner_type: python-script\nentry_point: show.py\n",
    "actions/show.py": """\
        from st2common.runners.base_action import Action


        class Show(Action):
            def run(self):
                return {"config": self.config}
        """,
}


def write_cfgdemo(packs: Path) -> None:
    write_pack(
        packs, "cfgdemo", PACK_FILES, meta=pack_meta("cfgdemo", description="pack config tests")
    )


def configs_settings(tmp_path: Path) -> Settings:
    return settings_for(
        tmp_path,
        packs=[tmp_path / "packs"],
        roles=("api", "actions"),
        configs_dir="configs",  # relative: resolved against base_dir, as in config.yaml
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    packs = tmp_path / "packs"
    write_cfgdemo(packs)
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "cfgdemo.yaml").write_text(
        textwrap.dedent("""\
        api_url: "https://{{ st2kv.system.cfgdemo.host }}/v1"
        retries: "{{ st2kv.system.cfgdemo.retries }}"
        token: "{{ st2kv.system.cfgdemo.token }}"
        """)
    )
    return configs_settings(tmp_path)


async def put_key(client, name: str, value: str, secret: bool = False) -> None:
    body = {"name": name, "value": value, "secret": secret}
    reply = await client.put(f"/api/v1/keys/{name}", json=body)
    assert reply.status == 200, await reply.text()


async def run_show(client) -> dict:
    created = await client.post("/api/v1/executions", json={"action": "cfgdemo.show"})
    assert created.status == 201, await created.text()
    execution_id = (await created.json())["id"]
    # Generous bound for a loaded machine; not a timing assertion.
    for _ in range(1000):
        data = await (await client.get(f"/api/v1/executions/{execution_id}")).json()
        if data["status"] in ("succeeded", "failed", "timeout", "abandoned"):
            return data
        await asyncio.sleep(0.03)
    raise AssertionError(f"execution {execution_id} did not finish: {data}")


async def test_python_action_sees_its_config_rendered_from_the_datastore(client):
    await put_key(client, "cfgdemo.host", "api.example.com")
    await put_key(client, "cfgdemo.retries", "4")
    await put_key(client, "cfgdemo.token", "tok-3f9a", secret=True)

    done = await run_show(client)
    assert done["status"] == "succeeded", done["result"]
    assert done["result"]["result"]["config"] == {
        "api_url": "https://api.example.com/v1",
        "retries": 4,
        "token": "tok-3f9a",  # a secret item is decrypted for the action
    }

    # A changed key applies to the next run, without a reload.
    await put_key(client, "cfgdemo.host", "eu.example.com")
    again = await run_show(client)
    assert again["result"]["result"]["config"]["api_url"] == "https://eu.example.com/v1"


async def test_a_config_the_datastore_cannot_fill_fails_the_execution_naming_the_item(client):
    await put_key(client, "cfgdemo.host", "api.example.com")
    await put_key(client, "cfgdemo.retries", "a few")
    await put_key(client, "cfgdemo.token", "tok-3f9a", secret=True)

    done = await run_show(client)
    assert done["status"] == "failed"
    error = done["result"]["error"]
    assert "pack 'cfgdemo'" in error and "config item 'retries'" in error
    assert "expected integer" in error


async def test_a_config_that_breaks_on_reload_keeps_the_one_that_worked(client, tmp_path):
    await put_key(client, "cfgdemo.host", "api.example.com")
    await put_key(client, "cfgdemo.token", "tok-3f9a", secret=True)
    config_file = tmp_path / "configs" / "cfgdemo.yaml"
    config_file.write_text(
        "api_url: 'https://{{ st2kv.system.cfgdemo.host }}/v2'\n"
        "token: '{{ st2kv.system.cfgdemo.token }}'\n"
    )
    report = await (await client.post("/api/v1/reload")).json()
    assert report["errors"] == []
    assert (await run_show(client))["result"]["result"]["config"]["api_url"].endswith("/v2")

    config_file.write_text("api_url: [unclosed\n")  # a YAML error
    report = await (await client.post("/api/v1/reload")).json()
    assert any(str(config_file) in error for error in report["errors"])
    assert str(config_file.resolve()) in report["kept_previous"]
    done = await run_show(client)
    assert done["status"] == "succeeded", done["result"]
    assert done["result"]["result"]["config"]["api_url"] == "https://api.example.com/v2"


async def test_a_pack_without_a_config_file_runs_with_the_schema_defaults(tmp_path):
    # StackStorm's config loader: no config file, no validation, the defaults filled in —
    # its own examples pack requires api_key and ships no config.
    write_cfgdemo(tmp_path / "packs")
    (tmp_path / "configs").mkdir()
    async with app_client(configs_settings(tmp_path)) as client:
        report = await (await client.get("/api/v1/packs/cfgdemo")).json()
        done = await run_show(client)
    assert done["status"] == "succeeded", done["result"]
    assert done["result"]["result"]["config"] == {"retries": 1}
    assert report["ref"] == "cfgdemo"


async def test_a_parameter_default_reads_the_pack_config_as_config_context(tmp_path):
    # StackStorm renders `{{ config_context.x }}` in a parameter default from the pack's
    # config (st2tests' fixtures.render_config_context); a value given is data, not a template.
    files = {
        "config.schema.yaml": "region: {type: string, default: eu-west-1}\n",
        "actions/where.yaml": textwrap.dedent("""\
            name: where
            runner_type: python-script
            entry_point: where.py
            parameters:
              region: {type: string, default: "in {{ config_context.region }}"}
            """),
        "actions/where.py": textwrap.dedent("""\
            from st2common.runners.base_action import Action


            class Where(Action):
                def run(self, region):
                    return region
            """),
    }
    write_pack(tmp_path / "packs", "cfgctx", files, meta=pack_meta("cfgctx"))
    (tmp_path / "configs").mkdir()
    async with app_client(configs_settings(tmp_path)) as client:
        runs = []
        for parameters in ({}, {"region": "{{ config_context.region }}"}):
            body = {"action": "cfgctx.where", "parameters": parameters}
            created = await (await client.post("/api/v1/executions", json=body)).json()
            runs.append(await wait_execution(client, created["id"]))
    assert [run["status"] for run in runs] == ["succeeded", "succeeded"], runs
    assert runs[0]["result"]["result"] == "in eu-west-1"
    assert runs[1]["result"]["result"] == "{{ config_context.region }}"


async def test_a_pack_whose_config_did_not_load_fails_its_actions_with_the_reason(tmp_path):
    packs = tmp_path / "packs"
    write_cfgdemo(packs)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "cfgdemo.yaml").write_text("retries: 2\n")  # api_url missing
    async with app_client(configs_settings(tmp_path)) as client:
        done = await run_show(client)
    assert done["status"] == "failed"
    error = done["result"]["error"]
    assert "pack 'cfgdemo' config did not load" in error
    assert "config item 'api_url' is required" in error


async def test_a_schema_that_newly_requires_an_item_is_not_covered_by_the_old_config(
    client, tmp_path
):
    # Only a broken file keeps the previous config; a config that is merely incomplete
    # for the new schema fails the pack's actions with the reason.
    await put_key(client, "cfgdemo.host", "api.example.com")
    await put_key(client, "cfgdemo.token", "tok-3f9a", secret=True)
    await put_key(client, "cfgdemo.retries", "2")
    schema = tmp_path / "packs" / "cfgdemo" / "config.schema.yaml"
    schema.write_text(schema.read_text() + "region: {type: string, required: true}\n")
    report = await (await client.post("/api/v1/reload")).json()
    assert any("config item 'region' is required" in error for error in report["errors"])
    assert report["kept_previous"] == []
    done = await run_show(client)
    assert done["status"] == "failed"
    assert "config item 'region' is required" in done["result"]["error"]
