"""A sensor's PostgreSQL lock lost while its holder lives (the server ends the lock's
session: here pg_terminate_backend) stops the sensor's child at once; the lock is taken
again, by the same process or another, and the sensor runs once again. Real PostgreSQL,
real sensor child processes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg

from engine.config import StoreSettings
from engine.http.context import RUNTIME
from engine.store.exclusive import advisory_key
from tests.support.app import app_client, settings_for
from tests.support.packs import write_pack
from tests.support.postgres import truncate_all
from tests.support.waiting import get_json, wait_until

TICKER = {
    "triggers/tick.yaml": (
        "name: tick\npayload_schema:\n  type: object\n  properties:\n"
        "    n: {type: integer}\n    pid: {type: integer}\n"
    ),
    "sensors/ticker.yaml": (
        "class_name: Ticker\nentry_point: ticker.py\npoll_interval: 0.2\ntrigger_types: [s.tick]\n"
    ),
    "sensors/ticker.py": """\
        import os

        from st2reactor.sensor.base import PollingSensor

        class Ticker(PollingSensor):
            def setup(self):
                self.n = 0

            def poll(self):
                self.n += 1
                self.sensor_service.dispatch("s.tick", {"n": self.n, "pid": os.getpid()})
    """,
}
REF = "s.Ticker"


def _settings(folder: Path, packs: Path, pg_url: str):
    folder.mkdir()
    return settings_for(
        folder, packs=[packs], roles=("api", "sensors"), store=StoreSettings(url=pg_url)
    )


async def _lock_backends(pg_url: str) -> list[int]:
    """The sessions holding the ticker's advisory lock."""
    unsigned = advisory_key(f"sensor:{REF}") & 0xFFFF_FFFF_FFFF_FFFF
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1",
            unsigned >> 32,
            unsigned & 0xFFFF_FFFF,
        )
        return [row["pid"] for row in rows]
    finally:
        await conn.close()


async def _terminate(pg_url: str, backend: int) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", backend)
    finally:
        await conn.close()


def _child_pid(client) -> int | None:
    return client.server.app[RUNTIME].sensors.states[REF].pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _ticks_from(client, pid: int) -> bool:
    ticks = await get_json(client, "/api/v1/triggerinstances", trigger="s.tick", limit=1000)
    return any(tick["payload"]["pid"] == pid for tick in ticks)


async def test_a_terminated_lock_session_stops_the_sensor_and_it_is_locked_again(
    tmp_path: Path, pg_url: str
) -> None:
    await truncate_all(pg_url)
    packs = tmp_path / "packs"
    write_pack(packs, "s", TICKER)
    async with app_client(_settings(tmp_path / "a", packs, pg_url)) as client:
        first = await wait_until(lambda: _child_pid(client), "the ticker started", timeout=20)
        await wait_until(lambda: _ticks_from(client, first), "its ticks", timeout=20)
        (backend,) = await _lock_backends(pg_url)
        await _terminate(pg_url, backend)
        # The child is gone within the check interval (its lock's session was dropped).
        await wait_until(lambda: not _alive(first), "the old child killed", timeout=10)
        state = client.server.app[RUNTIME].sensors.states[REF]
        await wait_until(
            lambda: "its lock was lost" in (state.last_error or ""), "the loss reported", timeout=10
        )
        # Locked again on a new session, and a new child runs and dispatches.
        second = await wait_until(
            lambda: (pid := _child_pid(client)) not in (None, first) and pid,
            "a new ticker",
            timeout=20,
        )
        assert await wait_until(lambda: _lock_backends(pg_url), "the lock again", timeout=10)
        (again,) = await _lock_backends(pg_url)
        assert again != backend
        await wait_until(lambda: _ticks_from(client, second), "new ticks", timeout=20)


async def test_another_process_takes_over_and_the_sensor_never_runs_twice(
    tmp_path: Path, pg_url: str
) -> None:
    await truncate_all(pg_url)
    packs = tmp_path / "packs"
    write_pack(packs, "s", TICKER)
    async with (
        app_client(_settings(tmp_path / "a", packs, pg_url)) as one,
        app_client(_settings(tmp_path / "b", packs, pg_url)) as two,
    ):
        holder = await wait_until(
            lambda: next((c for c in (one, two) if _child_pid(c)), None), "a holder", timeout=20
        )
        other = two if holder is one else one
        old = _child_pid(holder)
        assert old is not None and _child_pid(other) is None
        (backend,) = await _lock_backends(pg_url)
        await _terminate(pg_url, backend)
        await wait_until(lambda: not _alive(old), "the holder's child killed", timeout=10)

        def one_running() -> int | None:
            running = [pid for c in (one, two) if (pid := _child_pid(c)) and _alive(pid)]
            assert len(running) <= 1, f"the sensor runs twice: {running}"
            return running[0] if running else None

        new = await wait_until(one_running, "the sensor running again", timeout=20, every=0.02)
        assert new != old
        await wait_until(lambda: _ticks_from(holder, new), "ticks from the new child", timeout=20)
        for _ in range(40):  # and it stays once, over a few lock checks
            one_running()
            await asyncio.sleep(0.1)
        assert len(await _lock_backends(pg_url)) == 1
