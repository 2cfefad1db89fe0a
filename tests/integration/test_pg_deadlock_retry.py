"""A PostgreSQL transaction rolled back to break a deadlock runs again (engine.store.postgres).

A workflow's cancel locks its run row and then its children's rows, while a task's end
locks its own row and then its workflow's run: two such transactions can deadlock, and
PostgreSQL rolls one back. The store runs that one again instead of failing it.
Here the deadlock is made on purpose with a second, plain connection.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from engine.config import StoreSettings
from engine.store import create_store


@pytest.mark.postgres
async def test_a_deadlock_victim_is_run_again_and_commits(pg_url: str, tmp_path) -> None:
    store = create_store(StoreSettings(url=pg_url), tmp_path)
    await store.open()
    other = await asyncpg.connect(pg_url)
    try:
        await other.execute(
            "CREATE TABLE deadlock_probe (id int PRIMARY KEY, v int);"
            "INSERT INTO deadlock_probe VALUES (1, 0), (2, 0)"
        )
        # The store's transaction waits last and checks first: it is the victim.
        await other.execute("SET deadlock_timeout = '10s'")
        attempts = 0
        holding_first = asyncio.Event()
        other_holds_second = asyncio.Event()

        async def first_then_second(conn: asyncpg.Connection) -> int:
            nonlocal attempts
            attempts += 1
            await conn.execute("SET LOCAL deadlock_timeout = '100ms'")
            await conn.execute("UPDATE deadlock_probe SET v = v + 1 WHERE id = 1")
            holding_first.set()
            if attempts == 1:
                await other_holds_second.wait()
                await asyncio.sleep(0.3)  # the other connection now waits for row 1
            await conn.execute("UPDATE deadlock_probe SET v = v + 1 WHERE id = 2")
            return attempts

        async def second_then_first() -> None:
            await holding_first.wait()
            async with other.transaction():
                await other.execute("UPDATE deadlock_probe SET v = v + 10 WHERE id = 2")
                other_holds_second.set()
                await other.execute("UPDATE deadlock_probe SET v = v + 10 WHERE id = 1")

        outcome = await asyncio.gather(
            store._write(first_then_second), second_then_first(), return_exceptions=True
        )
        # The store's transaction was rolled back once, ran again and committed; the other
        # one, unblocked by the rollback, committed too.
        assert outcome == [2, None]
        rows = dict(await other.fetch("SELECT id, v FROM deadlock_probe"))
        assert rows[1] % 10 == 1 and rows[2] % 10 == 1  # the store's changes, exactly once
    finally:
        await other.execute("DROP TABLE IF EXISTS deadlock_probe")
        await other.close()
        await store.close()
