"""Orquesta workflow latency: a 10-task sequential workflow of core.noop, from the
`POST /api/v1/executions` to the workflow `succeeded`.

    python bench/bench_workflows.py [--store sqlite:///path.db | postgresql://...] [--runs 30]
    python bench/bench_workflows.py --items [--store ...]

One process runs the api, actions and workflows roles on the given store (default: a
fresh SQLite file in a temporary folder; a PostgreSQL database must be empty or
disposable). The end is seen through the runtime's `execution_finished` event, so no
polling of the API adds to the figure. Prints the median, p90 and best of --runs runs
after two warm-up runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import AuthSettings, Settings, StoreSettings, WorkerSettings
from engine.http.app import create_app
from engine.http.context import RUNTIME
from tests.support.workflow_pack import write_workflow_pack


async def bench(
    store_url: str | None,
    runs: int,
    action: str = "flows.noop10",
    warmups: int = 2,
    actions_concurrency: int = 8,
) -> list[float]:
    folder = Path(tempfile.mkdtemp(prefix="bench-workflows-"))
    write_workflow_pack(folder / "packs")
    settings = Settings(
        store=StoreSettings(url=store_url or f"sqlite:///{folder / 'bench.db'}"),
        auth=AuthSettings(enabled=False),
        rules_dirs=(),
        packs_dirs=(str(folder / "packs"),),
        roles=("api", "actions", "workflows"),
        base_dir=str(folder),
        workers=WorkerSettings(actions_concurrency=actions_concurrency),
    )
    timings = []
    async with TestClient(TestServer(create_app(settings))) as client:
        runtime = client.app[RUNTIME]
        ended: dict[str, asyncio.Future] = {}

        def on_event(event: str, *details) -> None:
            if event == "execution_finished" and details and details[0].id in ended:
                future = ended[details[0].id]
                if not future.done():
                    future.set_result(details[0].status)

        runtime.observers.append(on_event)
        for index in range(runs + warmups):
            started = time.perf_counter()
            # The id is known only from the reply: events that come first are kept.
            reply = await client.post("/api/v1/executions", json={"action": action})
            workflow_id = (await reply.json())["id"]
            future = ended.setdefault(workflow_id, asyncio.get_running_loop().create_future())
            status = (await runtime.store.get_execution(workflow_id)).status
            if status != "succeeded":
                status = await asyncio.wait_for(future, 300)
            elapsed = (time.perf_counter() - started) * 1000
            if status != "succeeded":
                raise SystemExit(f"workflow {workflow_id} ended {status}")
            if index >= warmups:
                timings.append(elapsed)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--items", action="store_true", help="with-items over 1,000 core.noop, concurrency 50"
    )
    parser.add_argument("--actions-concurrency", type=int, default=8)
    args = parser.parse_args()
    if args.items:
        [elapsed] = asyncio.run(bench(args.store, 1, "flows.items", 0, args.actions_concurrency))
        print(
            f"with-items, 1,000 core.noop, concurrency 50, workers.actions_concurrency "
            f"{args.actions_concurrency}: {1000 / elapsed * 1000:.0f} items/s"
        )
        return
    timings = asyncio.run(bench(args.store, args.runs))
    ordered = sorted(timings)
    p90 = ordered[max(0, int(len(ordered) * 0.9) - 1)]
    print(
        f"10-task sequential core.noop workflow, {len(timings)} runs: "
        f"median {statistics.median(timings):.1f} ms, p90 {p90:.1f} ms, "
        f"best {ordered[0]:.1f} ms"
    )


if __name__ == "__main__":
    main()
