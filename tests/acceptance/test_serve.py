"""A real `hookyard serve` process on loopback: probes, one webhook end to end, exits."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest

from tests.support.waiting import wait_processed

pytestmark = pytest.mark.slow


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any, Any]:
    async with session.get(url) as response:
        assert response.content_type == "application/json", url
        return response.status, await response.json(), response.headers


async def test_probes_and_a_webhook_becomes_an_enforcement_and_a_requested_execution(
    serve,
):
    server = serve.start()
    async with aiohttp.ClientSession() as session:
        status, health, _ = await get_json(session, server.url + "/health")
        assert (status, health) == (200, {"status": "alive"})
        status, ready, _ = await get_json(session, server.url + "/ready")
        assert status == 200 and ready["ready"] is True
        assert sorted(ready["roles"]) == ["api", "rules"]

        body = {"kind": "load", "n": 42, "pad": "b"}
        async with session.post(f"{server.url}/webhooks/{serve.webhook}", json=body) as response:
            assert response.status == 202, await response.text()
            accepted = await response.json()
        instance_id = accepted["id"]

        instance = await wait_processed(session, instance_id, base=server.url, timeout=15)
        assert instance["status"] == "processed"
        assert instance["payload"]["body"] == body
        assert instance["webhook"] == serve.webhook

        status, enforcements, headers = await get_json(
            session, f"{server.url}/api/v1/ruleenforcements?trigger_instance={instance_id}"
        )
        assert status == 200 and headers["X-Total-Count"] == "1"
        (enforcement,) = enforcements
        assert enforcement["rule"]["ref"] == serve.rule_ref
        assert enforcement["status"] == "succeeded"
        assert enforcement["trigger_instance_id"] == instance_id

        status, executions, headers = await get_json(
            session, f"{server.url}/api/v1/executions?trigger_instance={instance_id}"
        )
        assert status == 200 and headers["X-Total-Count"] == "1"
        (execution,) = executions
        assert execution["id"] == enforcement["execution_id"]
        assert execution["status"] == "requested"
        assert execution["action"]["ref"] == "core.noop"
        assert execution["parameters"] == {"n": 42}
        assert execution["context"]["trigger_instance"]["id"] == instance_id
        assert execution["context"]["rule"]["ref"] == serve.rule_ref


async def test_sigterm_drains_and_exits_0(serve):
    server = serve.start()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.url}/webhooks/{serve.webhook}", json={"kind": "load", "n": 1, "pad": "b"}
        ) as response,
    ):
        assert response.status == 202
    assert server.terminate() == 0
    log = server.log_text()
    assert "stopped" in log.splitlines()[-1], log
    assert "rules worker stopped" in log
    assert "Traceback" not in log


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_unknown_role_is_a_one_line_error(serve):
    result = serve.run("--roles", "cooking", "--port", "0")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    line = one_error_line(result.stderr)
    assert "cooking" in line and "--roles" in line


def test_port_in_use_is_a_clear_error(serve):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve.run(
            "--host", "127.0.0.1", "--port", str(port), "--store", serve.default_store
        )
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert "cannot listen" in line and str(port) in line
    assert "address already in use" in line.lower()
    # The roles that started with the app were stopped, not abandoned.
    assert "rules worker stopped" in result.stderr


def test_unknown_config_key_is_named(serve, tmp_path):
    config = tmp_path / "hookyard.yaml"
    config.write_text("server:\n  port: 9000\n  prot: 9001\n", encoding="utf-8")
    result = serve.run("--config", str(config))
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert "server.prot" in line and "unknown setting" in line
    assert str(config) in line
