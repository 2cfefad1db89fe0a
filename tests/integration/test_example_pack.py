"""The repository's example rules and `examples` pack load cleanly and run (real app, real
SQLite file, the script action run for real): what `hookyard serve` in the checkout serves."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.config import Settings
from engine.http.context import RUNTIME
from tests.support.app import REPO_ROOT, app_client, settings_for

ROOT = REPO_ROOT


def example_settings(tmp_path: Path) -> Settings:
    return settings_for(
        tmp_path,
        packs=[ROOT / "packs"],
        roles=("api", "actions"),
        rules_dirs=(str(ROOT / "rules"),),
    )


async def test_example_rules_and_pack_load_and_the_script_gets_values_as_argv(tmp_path):
    async with app_client(example_settings(tmp_path)) as client:
        runtime = client.server.app[RUNTIME]
        assert runtime.load_errors == []
        assert {"core", "examples"} <= set(runtime.packs.packs)
        assert len(runtime.ruleset) == len(list((ROOT / "rules").glob("*.yaml")))
        marker = tmp_path / "PWN"
        hostile = {"service": f"api; touch {marker}", "message": f"$(touch {marker})"}
        response = await client.post(
            "/api/v1/executions", json={"action": "examples.announce", "parameters": hostile}
        )
        assert response.status == 201, await response.text()
        execution_id = (await response.json())["id"]
        for _ in range(200):
            execution = await (await client.get(f"/api/v1/executions/{execution_id}")).json()
            if execution["status"] not in ("requested", "scheduled", "running"):
                break
            await asyncio.sleep(0.05)
        assert execution["status"] == "succeeded", execution
        assert execution["result"]["stdout"] == f"api; touch {marker}: $(touch {marker})"
        assert not marker.exists()
