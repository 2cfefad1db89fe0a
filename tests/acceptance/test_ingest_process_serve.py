"""The ingest writer process under a real `hookyard serve`: it never outlives its parent,
and a signal sent to the whole process group drains through it.

Only a real parent process can be SIGKILLed or sent SIGTERM with its process group (serve
runs in its own session, so its process group is its own), hence these two are here; the
rest of the writer process's behaviour is tests/integration/test_ingest_process.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.support.ingest_writer import CHILD_MODULE
from tests.support.processes import EXIT_TIMEOUT, alive, child_running, reaped, wait_gone

pytestmark = pytest.mark.slow


def writer_of(parent: int) -> int:
    """The pid of `parent`'s ingest writer process (waits for it to appear)."""
    return child_running(parent, CHILD_MODULE)


def stored_bodies(db: Path) -> dict[str, dict]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT id, payload FROM trigger_instances").fetchall()
    return {instance_id: json.loads(payload)["body"] for instance_id, payload in rows}


async def test_a_killed_serve_takes_its_writer_process_with_it(serve):
    process = serve.start(roles="api", name="killed")
    with reaped(writer_of(process.proc.pid)) as writer:
        assert alive(writer)
        async with aiohttp.ClientSession() as session:
            url = f"{process.url}/webhooks/{serve.webhook}"
            async with session.post(url, json={"kind": "load", "n": 0, "pad": "b"}) as response:
                assert response.status == 202, await response.text()
        assert process.kill() == -signal.SIGKILL
        assert wait_gone(writer), "the writer process outlived its killed parent"


async def test_sigterm_to_the_process_group_drains_through_the_writer(serve, tmp_path):
    process = serve.start(roles="api", name="drained")
    accepted: dict[int, str] = {}
    statuses: Counter[int | None] = Counter()
    signalled = False
    with reaped(writer_of(process.proc.pid)) as writer:
        url = f"{process.url}/webhooks/{serve.webhook}"
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=32), timeout=aiohttp.ClientTimeout(total=20)
        ) as session:

            async def post(n: int) -> None:
                nonlocal signalled
                try:
                    async with session.post(url, json={"kind": "load", "n": n, "pad": "b"}) as r:
                        statuses[r.status] += 1
                        if r.status == 202:
                            accepted[n] = (await r.json())["id"]
                except (aiohttp.ClientError, TimeoutError):
                    statuses[None] += 1  # refused once serve stopped listening
                    return
                if len(accepted) >= 100 and not signalled:
                    signalled = True
                    # As a terminal's Ctrl-C or a service manager's stop: the whole group.
                    os.killpg(process.proc.pid, signal.SIGTERM)

            await asyncio.gather(*(post(n) for n in range(600)))
        assert signalled
        assert process.proc.wait(EXIT_TIMEOUT) == 0, process.log_tail()
        assert wait_gone(writer), "the writer process outlived the drained serve"
    # The writer ignored the SIGTERM and wrote what the api process still held: no 503.
    assert set(statuses) <= {202, None}, statuses
    stored = stored_bodies(tmp_path / "hookyard.db")
    for n, instance_id in accepted.items():
        assert stored.get(instance_id, {}).get("n") == n, f"n={n} answered 202, not stored"
    assert "ingest writer process exited" not in process.log_text()
