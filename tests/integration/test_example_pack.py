"""The repository's example rules and `examples` pack load cleanly and run (real app, real
SQLite file, the script action run for real): what `hookyard serve` in the checkout serves."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from engine.config import AuthSettings, Settings, StoreSettings, WorkerSettings
from engine.http.app import create_app
from engine.http.context import RUNTIME

ROOT = Path(__file__).parents[2]


def settings_for(tmp_path: Path) -> Settings:
    return Settings(
        store=StoreSettings(url=f"sqlite:///{tmp_path}/hookyard.db"),
        workers=WorkerSettings(poll_interval=0.05),
        auth=AuthSettings(enabled=False),
        rules_dirs=(str(ROOT / "rules"),),
        packs_dirs=(str(ROOT / "packs"),),
        roles=("api", "actions"),
        base_dir=str(tmp_path),
    )


async def test_example_rules_and_pack_load_and_the_script_gets_values_as_argv(tmp_path):
    async with TestClient(TestServer(create_app(settings_for(tmp_path)))) as client:
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
