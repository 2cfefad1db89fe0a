"""`hookyard execution get`'s task tree: a workflow's task runs and a chain's links, named
from `context.orquesta.task_name` or `context.chain.name`, children indented."""

from __future__ import annotations

from engine.cli.executions import task_rows


def test_links_and_tasks_are_named_and_nested_under_their_parent() -> None:
    children = [
        {
            "id": "L1",
            "parent": "C",
            "status": "succeeded",
            "action": {"ref": "flows.echo"},
            "context": {"chain": {"name": "inner"}},
            "started_at": "2026-01-01T00:00:00+00:00",
            "end_timestamp": "2026-01-01T00:00:02.500000+00:00",
        },
        {
            "id": "T1",
            "parent": "L1",
            "status": "succeeded",
            "action": {"ref": "core.local"},
            "context": {"orquesta": {"task_name": "greet"}},
        },
        {
            "id": "L2",
            "parent": "C",
            "status": "failed",
            "action": {"ref": "core.noop"},
            "context": {"chain": {"name": "after"}},
        },
    ]
    assert task_rows("C", children) == [
        ["inner", "succeeded", "flows.echo", "2.5", "L1"],
        ["  greet", "succeeded", "core.local", "", "T1"],
        ["after", "failed", "core.noop", "", "L2"],
    ]
