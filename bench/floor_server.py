"""The floor of durable ingest, for the ingest benchmark: the least work that still stores
each webhook as Hookyard does, and nothing else.

    python bench/floor_server.py --port 18081 --db /tmp/floor.db [--mode group|naive]

aiohttp parses the JSON body (as bench/bare_server.py does), builds the named-hook payload
(headers, lower-case headers, body) and one `trigger_instances` row of Hookyard's real
SQLite schema (same migrations, same ids, WAL, synchronous=NORMAL), and answers 202 with
the id once the row is committed:
  group  every request waiting when the previous commit ends goes into the next one (one
         multi-row INSERT, one COMMIT), on the event loop — Hookyard's group commit without
         the rest of the engine (routing to rules, auth, dedupe, load shedding, metrics...);
  naive  one transaction and one COMMIT per request.
No rules, no workers, no error handling beyond aiohttp's: a reference, not a product.
What `group` reaches relative to bare is the ceiling for durable ingest done in one
Python process on this schema and machine. Hookyard's `api` role goes past it by storing
webhooks in a child process (engine.ingest.writer), on a second core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime

from aiohttp import web

from engine.model.records import new_id
from engine.store.migrations.sqlite import MIGRATIONS
from engine.store.sqlite_checkpoint import RESTART_AFTER_FRAMES, WAL_SIZE_LIMIT

CONNECTION = web.AppKey("connection", sqlite3.Connection)
COMMITTER = web.AppKey("committer", object)


def insert_sql(rows: int) -> str:
    values = ",".join(["(?, ?, ?, ?, 'pending', ?, NULL, ?)"] * rows)
    return (
        "INSERT INTO trigger_instances (id, trigger, payload, occurrence_time, status,"
        f" webhook, dedupe_key, updated_at) VALUES {values}"
    )


def commit_rows(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(insert_sql(len(rows)), [value for row in rows for value in row])
    conn.execute("COMMIT")


class GroupCommitter:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._queue: list[tuple[tuple, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()

    async def submit(self, row: tuple) -> None:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((row, future))
        self._wakeup.set()
        await future

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue[:128], self._queue[128:]
                commit_rows(self._conn, [row for row, _ in batch])
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
                await asyncio.sleep(0)  # let the answered callers (and new ones) run


async def accept(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    headers = dict(request.headers)
    lower = {name.lower(): value for name, value in headers.items()}
    payload = json.dumps({"headers": headers, "headers_lower": lower, "body": body})
    now = datetime.now(UTC).isoformat(timespec="microseconds")[:26] + "Z"
    instance_id = new_id()
    row = (instance_id, "core.st2.webhook", payload, now, request.match_info["name"], now)
    committer = request.app[COMMITTER]
    if committer is None:
        commit_rows(request.app[CONNECTION], [row])
    else:
        await committer.submit(row)
    return web.Response(
        body=json.dumps({"id": instance_id}).encode(),
        status=202,
        content_type="application/json",
    )


def open_database(path: str) -> sqlite3.Connection:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for migration in MIGRATIONS:
        for statement in migration:
            conn.execute(statement)
    # As Hookyard does: no checkpoint inside a commit on the loop; a thread checkpoints.
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    return conn


def checkpoint_forever(path: str, interval: float = 0.25) -> None:
    # As Hookyard's checkpointer does (engine.store.sqlite_checkpoint): PASSIVE, and a
    # RESTART once the WAL has grown past the same bound.
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    while True:
        time.sleep(interval)
        _, wal_frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if wal_frames > RESTART_AFTER_FRAMES:
            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True, help="SQLite file, replaced at start")
    parser.add_argument("--mode", choices=("group", "naive"), default="group")
    args = parser.parse_args()
    app = web.Application()
    conn = open_database(args.db)
    app[CONNECTION] = conn
    threading.Thread(target=checkpoint_forever, args=(args.db,), daemon=True).start()

    async def start_committer(app: web.Application):
        if args.mode == "naive":
            app[COMMITTER] = None
            yield
            return
        committer = GroupCommitter(conn)
        app[COMMITTER] = committer
        task = asyncio.get_running_loop().create_task(committer.run())
        yield
        task.cancel()

    app.cleanup_ctx.append(start_committer)
    app.router.add_post("/webhooks/{name:.+}", accept)
    app.router.add_get("/health", lambda request: web.json_response({"status": "alive"}))
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, backlog=2048)


if __name__ == "__main__":
    main()
