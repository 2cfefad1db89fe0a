"""A store failure answers 503 with Retry-After and a generic message: the store's own text
(database file paths, PostgreSQL hosts and driver details) stays in the server's log."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

from engine.config import IngestSettings, Settings, StoreSettings
from engine.http.context import RUNTIME, STORE_BUSY, STORE_UNAVAILABLE
from tests.support.app import app_client, settings_for
from tests.support.packs import noop_rule

RULE = noop_rule("anything")


def errors_settings(store_url: str, tmp_path: Path, **store) -> Settings:
    return settings_for(
        tmp_path,
        rules={"anything": RULE},
        store=StoreSettings(url=store_url, **store),
        ingest=IngestSettings(retry_after=9),  # auth off: about error bodies, not auth
    )


def private_details(store_url: str, tmp_path: Path) -> list[str]:
    """What a client must never read: the database file's path, the server's host/name."""
    if store_url.startswith("sqlite"):
        return [str(tmp_path), "hookyard.db", "sqlite"]
    parts = urlsplit(store_url)
    return [parts.path.lstrip("/"), "postgresql", str(parts.port)]


async def test_an_unavailable_store_is_a_generic_503(store_url, tmp_path, caplog) -> None:
    async with app_client(errors_settings(store_url, tmp_path)) as client:
        await client.app[RUNTIME].store.close()  # the database is gone from under the app
        with caplog.at_level(logging.ERROR, logger="engine.http.context"):
            responses = [
                await client.get("/api/v1/executions"),
                await client.post("/webhooks/anything", json={"x": 1}),
                await client.get("/ready"),
            ]
        for response in responses:
            assert response.status == 503
            text = await response.text()
            leaked = [detail for detail in private_details(store_url, tmp_path) if detail in text]
            assert leaked == [], text
        listing, webhook, _ready = responses
        assert (await listing.json())["faultstring"] == STORE_UNAVAILABLE
        assert listing.headers["Retry-After"] == "9"
        assert (await webhook.json())["faultstring"] == STORE_UNAVAILABLE
    # The detail is logged for the operator.
    assert "not open" in caplog.text


async def test_a_locked_sqlite_file_is_a_generic_busy_503(tmp_path) -> None:
    path = tmp_path / "hookyard.db"
    settings = errors_settings(f"sqlite:///{path}", tmp_path, busy_timeout=0.2)
    async with app_client(settings) as client:
        # Another process holds the write lock past the store's busy timeout.
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            response = await client.post("/webhooks/anything", json={"x": 1})
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert response.status == 503
        assert response.headers["Retry-After"]
        body = await response.json()
        assert body == {"faultstring": STORE_BUSY}


async def test_unstorable_values_still_name_the_callers_data(tmp_path) -> None:
    settings = errors_settings(f"sqlite:///{tmp_path / 'hookyard.db'}", tmp_path)
    async with app_client(settings) as client:
        response = await client.post(
            "/webhooks/anything",
            data=b'{"x": NaN}',
            headers={"Content-Type": "application/json"},
        )
        assert response.status == 400
        assert "cannot be stored" in (await response.json())["faultstring"]
