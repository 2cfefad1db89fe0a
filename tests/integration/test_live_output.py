"""A running action's output on its way to the store (engine.workers.live_output), on
both backends: gathered into few writes, secrets masked, bounded while the store lags."""

from __future__ import annotations

from engine.model.records import NewExecution
from engine.store import Store
from engine.workers.live_output import DROPPED_MARKER, MAX_PENDING_CHARS, LiveOutput


async def new_execution(store: Store) -> str:
    return (await store.create_execution(NewExecution(action="core.local", parameters={}))).id


async def test_pieces_are_gathered_masked_and_stored_in_order(store: Store) -> None:
    execution_id = await new_execution(store)
    live = LiveOutput(store, execution_id, "core.local", "local-shell-cmd", ["hunter2"], {})
    live.write("stdout", "one ")
    live.write("stdout", "password=hunter2\n")
    live.write("stderr", "warn\n")
    live.write("stdout", "two\n")
    await live.close()
    chunks = await store.list_output(execution_id)
    # Runs of one pipe become one piece; the secret never reaches the store.
    assert [(c.output_type, c.data) for c in chunks] == [
        ("stdout", "one password=********\n"),
        ("stderr", "warn\n"),
        ("stdout", "two\n"),
    ]
    live.write("stdout", "after close\n")  # a late write starts nothing
    assert len(await store.list_output(execution_id)) == 3


async def test_what_waits_for_the_store_is_bounded(store: Store) -> None:
    execution_id = await new_execution(store)
    live = LiveOutput(store, execution_id, "core.local", "local-shell-cmd", [], {})
    line = "x" * 1023 + "\n"
    # Written without yielding: nothing can be stored meanwhile, as with a stalled store.
    for _ in range(3 * MAX_PENDING_CHARS // len(line)):
        live.write("stdout", line)
    await live.close()
    text = "".join(c.data for c in await store.list_output(execution_id))
    assert len(text) <= MAX_PENDING_CHARS + len(DROPPED_MARKER)
    assert text.endswith(DROPPED_MARKER)
    assert text.startswith(line)
