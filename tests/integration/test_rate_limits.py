"""Rate limits per webhook and per API key (issue 23): the real app on a real SQLite file or
the real PostgreSQL, 429 with Retry-After past the limit, nothing stored for a refused
request, the limit shared by two processes on one PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.config import StoreSettings
from engine.errors import ConfigError
from engine.http.context import RUNTIME
from engine.http.hookdefs import load_definitions
from engine.model.apikeys import new_api_key
from engine.support.durations import rate_per_second
from tests.support.app import app_client, settings_for
from tests.support.postgres import scratch_database

HOOK_RULE = """\
name: on_limited
pack: t
trigger: {type: core.st2.webhook, parameters: {url: limited}}
action: {ref: core.noop}
"""


def test_rates_and_hook_settings_are_read_or_refused_by_name() -> None:
    assert rate_per_second("100/s") == 100 and rate_per_second("6000/m") == 100
    assert rate_per_second(" 36/h ") == 0.01 and rate_per_second(5) == 5
    for bad in ("fast", "-1/s", "10/fortnight", "2000000/s"):
        with pytest.raises(ValueError):
            rate_per_second(bad)
    hooks = load_definitions(
        {"h": {"auth": "none", "rate_limit": {"rate": "5/s", "burst": 9}}}, None
    )
    assert (hooks["h"].rate_limit.rate, hooks["h"].rate_limit.capacity) == (5, 9)
    for config, message in (
        ({"rate_limit": "often"}, "webhooks.h.rate_limit.rate"),
        ({"rate_limit": {"rate": "5/s", "per": "ip"}}, "unknown option"),
        ({"rate_limit": {"rate": "0/s"}}, "above 0"),
        ({"rate_limit": {"rate": "5/s", "burst": -1}}, "rate_limit.burst"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_definitions({"h": {"auth": "none", **config}}, None)


async def test_a_hook_over_its_rate_gets_429_and_nothing_is_stored(tmp_path) -> None:
    settings = settings_for(
        tmp_path,
        rules={"limited": HOOK_RULE},
        webhooks={"limited": {"auth": "none", "rate_limit": {"rate": "2/s", "burst": 2}}},
    )
    async with app_client(settings) as client:
        answers = [await client.post("/webhooks/limited", json={"n": n}) for n in range(3)]
        assert [a.status for a in answers] == [202, 202, 429]
        refused = answers[2]
        assert int(refused.headers["Retry-After"]) >= 1
        assert (
            "webhook 'limited' is over its rate limit of 2" in (await refused.json())["faultstring"]
        )
        stored = await (await client.get("/api/v1/triggerinstances")).json()
        assert len(stored) == 2
        await asyncio.sleep(0.6)  # a token is back after half a second at 2/s
        assert (await client.post("/webhooks/limited", json={})).status == 202
        metrics = await (await client.get("/metrics")).text()
        assert 'hookyard_rate_limited_total{kind="webhook",name="limited"} 1.0' in metrics


async def test_a_key_over_its_rate_is_refused_on_webhooks_and_the_api(tmp_path) -> None:
    settings = settings_for(tmp_path, rules={"limited": HOOK_RULE}, auth=True)
    async with app_client(settings) as client:
        store = client.server.app[RUNTIME].store
        record, key = new_api_key("slow", role="admin", rate_limit=3.0, rate_burst=3.0)
        await store.create_api_key(record)
        headers = {"St2-Api-Key": key}
        statuses = [
            (await client.get("/api/v1/executions", headers=headers)).status,
            (await client.post("/webhooks/limited", json={}, headers=headers)).status,
            (await client.get("/api/v1/rules", headers=headers)).status,
            (await client.get("/api/v1/executions", headers=headers)).status,
        ]
        assert statuses == [200, 202, 200, 429]
        # Through the API an admin lifts it; the next request goes through.
        await asyncio.sleep(0.7)  # two tokens back at 3/s
        shown = await (await client.get(f"/api/v1/apikeys/{record.id}", headers=headers)).json()
        assert shown["rate_limit"] == {"rate": 3.0, "burst": 3.0}
        lifted = await client.put(
            f"/api/v1/apikeys/{record.id}", json={"rate_limit": None}, headers=headers
        )
        assert lifted.status == 200 and (await lifted.json())["rate_limit"] is None
        for _ in range(6):
            assert (await client.get("/api/v1/executions", headers=headers)).status == 200
        bad = await client.put(
            f"/api/v1/apikeys/{record.id}", json={"rate_limit": "often"}, headers=headers
        )
        assert bad.status == 400 and "rate_limit.rate" in (await bad.json())["faultstring"]


@pytest.mark.postgres
async def test_two_processes_on_postgresql_share_one_limit(tmp_path) -> None:
    async with scratch_database("hookyard_rate") as url:
        rate, burst = 5.0, 5.0
        apps = [
            settings_for(
                tmp_path / name,
                rules={"limited": HOOK_RULE},
                store=StoreSettings(url=url),
                webhooks={
                    "limited": {"auth": "none", "rate_limit": {"rate": rate, "burst": burst}}
                },
            )
            for name in ("one", "two")
        ]
        for name in ("one", "two"):
            (tmp_path / name).mkdir(parents=True, exist_ok=True)
        async with app_client(apps[0]) as first, app_client(apps[1]) as second:
            started = time.monotonic()
            accepted = 0
            for n in range(40):
                client = first if n % 2 else second
                response = await client.post("/webhooks/limited", json={"n": n})
                assert response.status in (202, 429)
                accepted += response.status == 202
            elapsed = time.monotonic() - started
    # Each process may hold one unspent token (a chunk of 0.1 s of 5/s, at least one).
    assert burst <= accepted <= burst + rate * elapsed + 2
