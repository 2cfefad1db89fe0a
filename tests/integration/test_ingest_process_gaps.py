"""The ingest writer process: the API process's secrets in the child's log lines, and the
pause before a new child while none can start.

Real parts, as in test_ingest_process: SQLite files under tmp_path and the real child
process. The child's log lines are read from the stderr it inherits (capfd).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from typing import Any

from engine.ingest import writer as ingest_writer
from engine.ingest.writer import IngestProcess
from engine.model.records import NewTriggerInstance
from engine.store import create_store
from engine.support.logs import SCRUBBED, register_secrets, scrubber
from tests.support.ingest_writer import ingest_writer_settings, stored_rows, writer_children
from tests.support.processes import alive
from tests.support.waiting import wait_until

# --- the secrets registered in the API process are hidden in the child's log lines ----------


async def test_the_child_hides_the_secrets_registered_in_the_api_process(
    tmp_path, monkeypatch, capfd
):
    # The scrubber is one per process: this test's secret must not stay registered in it.
    monkeypatch.setattr(scrubber, "_secrets", set(scrubber._secrets))
    monkeypatch.setattr(scrubber, "_pattern", scrubber._pattern)
    secret = f"whsec-{uuid.uuid4().hex}"
    register_secrets(secret)
    # The child logs the path of a SQLite file it migrates: here, one with the secret in
    # a folder's name.
    folder = tmp_path / f"data-{secret}-end"
    settings = ingest_writer_settings(
        tmp_path / "app", store_url=f"sqlite:///{folder / 'hookyard.db'}"
    )
    store = create_store(settings.store, tmp_path)
    writer = IngestProcess(settings, store)
    capfd.readouterr()  # what came before is not the child's
    # The writer starts first: its child is the first to open the new file, so it is the
    # child that migrates it, and logs so (before it answers "ready").
    await writer.start()
    try:
        pid = writer.pid
        await store.open()
        answer = await writer.add_trigger_instance(
            NewTriggerInstance(trigger="t.custom", payload={"n": 1})
        )
        assert answer.id in await stored_rows(settings.store.url, [answer.id])
    finally:
        await writer.close()
        await store.close()
    await wait_until(lambda: not alive(pid), "the writer process exits")
    err = capfd.readouterr().err
    migrated = [line for line in err.splitlines() if "sqlite schema migrated" in line]
    # The child did log the path (so the test is not passing on an empty stderr)...
    assert migrated, err
    scrubbed_path = str(folder / "hookyard.db").replace(secret, SCRUBBED)
    assert all(f"path={scrubbed_path}" in line for line in migrated), migrated
    # ...and nowhere did the secret itself appear.
    assert secret not in err


# --- the pause before a new child doubles while none can start --------------------------------


class _RecordedRespawnPauses:
    """engine.ingest.writer's `asyncio`, except that the pauses `_respawn` asks for are
    recorded (and shortened, to keep the test fast); every other call is asyncio's own."""

    def __init__(self, on_pause) -> None:
        self.pauses: list[float] = []
        self._on_pause = on_pause

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    def sleep(self, delay: float, *args: Any, **kwargs: Any):
        if sys._getframe(1).f_code is IngestProcess._respawn.__code__:
            self.pauses.append(delay)
            self._on_pause(len(self.pauses))
            delay = 0.01
        return asyncio.sleep(delay, *args, **kwargs)


async def test_respawn_pauses_double_up_to_the_cap_then_a_child_starts_again(
    tmp_path, monkeypatch, caplog
):
    # The first pause, then doubled after each of seven failed starts: 30 (not 32), and
    # 30 again (not 60). The eighth start works.
    expected = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert (ingest_writer._RESTART_PAUSE, ingest_writer._RESTART_PAUSE_MAX) == (0.5, 30.0)
    data = tmp_path / "data"
    settings = ingest_writer_settings(
        tmp_path / "app", store_url=f"sqlite:///{data / 'hookyard.db'}"
    )
    away = tmp_path / "data.away"
    problems: list[str | None] = []
    writer: IngestProcess | None = None

    def on_pause(count: int) -> None:
        problems.append(writer.problem())
        if count == len(expected):
            # Before the last pause's end: the next child can open the store again.
            data.unlink()
            away.rename(data)

    recorder = _RecordedRespawnPauses(on_pause)
    before = writer_children()
    store = create_store(settings.store, tmp_path)
    await store.open()
    try:
        writer = IngestProcess(settings, store)
        await writer.start()
        first_pid = writer.pid
        monkeypatch.setattr(ingest_writer, "asyncio", recorder)
        # A new child cannot open the store: its folder is a file now.
        data.rename(away)
        data.write_text("not a folder")
        os.kill(first_pid, signal.SIGKILL)
        await wait_until(lambda: writer.restarts == 1, "a new writer process", 30.0)
        second_pid = writer.pid
        assert recorder.pauses == expected
        assert writer.restarts == 1
        assert second_pid not in (None, first_pid) and alive(second_pid)
        assert writer_children() - before == {second_pid}, "the failed ones are gone"
        # Every failed start was the store that could not be opened, said in the log.
        failures = [
            record.getMessage()
            for record in caplog.records
            if record.getMessage().startswith("the ingest writer process did not start")
        ]
        assert len(failures) == len(expected) - 1, failures
        assert all("cannot create the folder" in failure for failure in failures), failures
        # Meanwhile /ready would say so; now it does not.
        assert problems == ["the ingest writer process is not running (restarting)"] * len(expected)
        assert writer.problem() is None
        # The new child stores webhooks.
        answer = await writer.add_trigger_instance(
            NewTriggerInstance(trigger="t.custom", payload={"after": "restart"})
        )
        rows = await stored_rows(settings.store.url, [answer.id])
        assert json.loads(rows[answer.id]["payload"]) == {"after": "restart"}
        # No pause after the child that started.
        assert recorder.pauses == expected
    finally:
        if writer is not None:
            await writer.close()
        await store.close()
