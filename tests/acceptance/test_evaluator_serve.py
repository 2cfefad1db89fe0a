"""The rule evaluator processes under a real `hookyard serve`: a hanging rule does not
take the server with it, the evaluator dies with a SIGKILLed serve, and after a restart
the poisoned instance is decided (processing_failed) instead of hanging it again."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.support.processes import alive, child_running, reaped, wait_gone

pytestmark = pytest.mark.slow

HANG_RULE = """\
name: hang
pack: acceptance
trigger: {type: core.st2.webhook, parameters: {url: hang}}
action:
  ref: core.noop
  parameters:
    x: "{% if trigger.body.hang %}{% for i in range(100000) %}\
{% set s = ('x' * 1000000).upper() %}{% endfor %}{% endif %}done"
"""
ENV = {
    "HOOKYARD_WORKERS__RULES_EVAL_TIMEOUT": "1",
    "HOOKYARD_WORKERS__LEASE_SECONDS": "2",
}


def evaluator_of(parent: int) -> int:
    """The pid of `parent`'s rule evaluator process (waits for it to appear)."""
    return child_running(parent, "engine.workers.evaluator_child")


async def status_of(session: aiohttp.ClientSession, base: str, instance_id: str) -> str:
    async with session.get(f"{base}/api/v1/triggerinstances/{instance_id}") as response:
        return (await response.json())["status"]


async def test_a_hanging_rule_survives_kill_9_and_restart_as_processing_failed(serve):
    (serve.rules_dir / "hang.yaml").write_text(HANG_RULE)
    # First run: the evaluator is given more time than the test waits (no watchdog yet).
    first = serve.start(env={**ENV, "HOOKYARD_WORKERS__RULES_EVAL_TIMEOUT": "600"})
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{first.url}/webhooks/hang", json={"hang": True}) as response:
            assert response.status == 202
            poisoned = (await response.json())["id"]
        with reaped(evaluator_of(first.proc.pid)) as evaluator:
            # It hangs in the evaluator, and the server still answers at once.
            await asyncio.sleep(1.0)
            began = time.monotonic()
            async with session.get(f"{first.url}/health") as health:
                assert health.status == 200
            assert time.monotonic() - began < 1.0
            assert await status_of(session, first.url, poisoned) == "processing"
            assert first.kill() == -9
            assert wait_gone(evaluator), "the evaluator outlived its SIGKILLed serve"

        second = serve.start(env=ENV)
        async with session.post(f"{second.url}/webhooks/hang", json={"hang": False}) as response:
            fine = (await response.json())["id"]
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            states = [await status_of(session, second.url, i) for i in (poisoned, fine)]
            if states == ["processing_failed", "processed"]:
                break
            await asyncio.sleep(0.1)
        assert states == ["processing_failed", "processed"], second.log_tail()
        query = {"trigger_instance": poisoned}
        async with session.get(f"{second.url}/api/v1/ruleenforcements", params=query) as reply:
            (enforcement,) = await reply.json()
        assert "exceeded its budget of 1 s" in enforcement["failure_reason"]
        assert alive(evaluator_of(second.proc.pid))
