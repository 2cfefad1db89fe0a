"""The ingest writer child process (engine.ingest.writer_child) and the rows it stores."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg

from engine.config import IngestSettings, Settings, StoreSettings
from tests.support.app import settings_for
from tests.support.packs import noop_rule
from tests.support.processes import alive, children, cmdline

CHILD_MODULE = "engine.ingest.writer_child"
CUSTOM_RULE = """\
name: custom
pack: t
trigger: {type: t.custom}
action: {ref: core.noop}
"""


def ingest_writer_settings(
    folder: Path,
    *,
    writer_process: bool = True,
    store_url: str | None = None,
    roles: tuple[str, ...] = ("api",),
    webhooks: dict[str, Any] | None = None,
    busy_timeout: float = 5.0,
) -> Settings:
    """An api app in `folder` whose webhooks the writer process stores: /webhooks/anything
    and the custom trigger t.custom each run core.noop."""
    folder.mkdir(parents=True, exist_ok=True)
    return settings_for(
        folder,
        rules={"any": noop_rule("anything"), "custom": CUSTOM_RULE},
        roles=roles,
        store=StoreSettings(
            url=store_url or f"sqlite:///{folder / 'hookyard.db'}", busy_timeout=busy_timeout
        ),
        ingest=IngestSettings(writer_process=writer_process),
        webhooks=webhooks or {},
    )


def writer_children() -> set[int]:
    """Running ingest writer processes started by this test process."""
    return {pid for pid in children(os.getpid()) if alive(pid) and CHILD_MODULE in cmdline(pid)}


async def stored_rows(url: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Rows of trigger_instances by id: payload (JSON text), status, dedupe_key, webhook."""
    if url.startswith("postgresql://"):
        conn = await asyncpg.connect(url)
        try:
            records = await conn.fetch(
                "SELECT id, trigger, payload::text AS payload, status, dedupe_key, webhook"
                " FROM trigger_instances WHERE id = ANY($1::text[])",
                ids,
            )
        finally:
            await conn.close()
        return {r["id"]: dict(r) for r in records}
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
        conn.row_factory = sqlite3.Row
        rows = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows += conn.execute(
                "SELECT id, trigger, payload, status, dedupe_key, webhook"
                f" FROM trigger_instances WHERE id IN ({marks})",
                chunk,
            ).fetchall()
    return {row["id"]: dict(row) for row in rows}
