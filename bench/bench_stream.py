"""The event stream under load: N clients on /api/v1/stream while webhooks arrive at a
fixed rate; the serve process's memory sampled throughout.

    python bench/bench_stream.py --clients 100 --rate 1000 --duration 20 --slow-clients 5

Starts `hookyard serve --roles api` (auth off, its own SQLite file, or --store a
PostgreSQL URL) in a scratch folder. Every client asks for st2.trigger_instance__create,
so each webhook is one event to each client (rate x clients events/s leave the server).
`--slow-clients` more connect on sockets with a 4 KiB receive buffer and never read: the
server must drop them (stream.client_queue) rather than buffer for them. The webhooks are
posted by a child process (`--post` mode of this script) so the clients' reading and the
posting do not share one event loop.

Reports: webhooks accepted/s, events received per reading client (min / median of what
was posted), delivery lag (webhook sent → event read, measured by client 0 on every
event: p50 / p99), the slow clients dropped, and the RSS of the serve process tree
(before the clients, peak, end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from harness import REPO, cpu_seconds, free_port, process_tree, rss_kib, terminate

EVENT = b"event: st2.trigger_instance__create"


async def post_at_rate(url: str, rate: float, seconds: float) -> dict:
    accepted = failures = 0

    async def post(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal accepted, failures
        body = {"trigger": "core.st2.webhook", "payload": {"n": n, "sent": time.time()}}
        try:
            async with session.post(url, json=body) as response:
                if response.status == 202:
                    accepted += 1
                else:
                    failures += 1
        except aiohttp.ClientError:
            failures += 1

    loop = asyncio.get_running_loop()
    total = round(rate * seconds)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        tasks, started = [], loop.time()
        for n in range(total):
            delay = started + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(session, n)))
        sending = loop.time() - started
        await asyncio.gather(*tasks)
        elapsed = loop.time() - started
    return {
        "posted": total,
        "accepted": accepted,
        "failures": failures,
        "send_rate": (total - 1) / sending if sending else 0.0,
        "accepted_per_second": accepted / elapsed,
    }


class Reader:
    def __init__(self, measure_lag: bool) -> None:
        self.events = 0
        self.lags: list[float] = []
        self.measure_lag = measure_lag
        self.status = 0

    async def run(self, session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> None:
        params = {"events": "st2.trigger_instance__create"}
        async with session.get(url, params=params) as response:
            self.status = response.status
            pending = b""
            reading = asyncio.ensure_future(stop.wait())
            while not stop.is_set():
                chunk_task = asyncio.ensure_future(response.content.readany())
                done, _ = await asyncio.wait({chunk_task, reading}, return_when="FIRST_COMPLETED")
                if chunk_task not in done:
                    chunk_task.cancel()
                    break
                chunk = chunk_task.result()
                if not chunk:
                    break
                if not self.measure_lag:
                    # `pending` keeps less than one marker's worth: a marker split across
                    # two reads is counted once, whole.
                    joined = pending + chunk
                    self.events += joined.count(EVENT)
                    pending = joined[-(len(EVENT) - 1) :]
                    continue
                pending += chunk
                *blocks, pending = pending.split(b"\n\n")
                now = time.time()
                for block in blocks:
                    if EVENT in block:
                        self.events += 1
                        data = block.split(b"\ndata: ", 1)[1]
                        self.lags.append(now - json.loads(data)["payload"]["sent"])


def slow_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    path = "/api/v1/stream?events=st2.trigger_instance__create"
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    return sock


def tree_rss_mib(pid: int) -> float:
    return sum(rss_kib(p) for p in process_tree(pid)) / 1024


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in process_tree(pid):
        try:
            total += cpu_seconds(member)
        except OSError:
            pass  # exited meanwhile
    return total


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def drive(args: argparse.Namespace, port: int, serve_pid: int) -> dict:
    base = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    readers = [Reader(measure_lag=index == 0) for index in range(args.clients)]
    rss = {"before": tree_rss_mib(serve_pid), "peak": 0.0}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [
            asyncio.create_task(r.run(session, base + "/api/v1/stream", stop)) for r in readers
        ]
        slow = [slow_socket(port) for _ in range(args.slow_clients)]
        await asyncio.sleep(2.0)  # every client connected
        rss["connected"] = tree_rss_mib(serve_pid)
        poster = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--post", f"{base}/api/v1/webhooks/st2",
            "--rate", str(args.rate), "--duration", str(args.duration),
            stdout=subprocess.PIPE,
        )  # fmt: skip

        async def sample() -> None:
            while True:
                rss["peak"] = max(rss["peak"], tree_rss_mib(serve_pid))
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample())
        cpu_before, wall_before = tree_cpu_seconds(serve_pid), time.monotonic()
        driver_before = time.process_time()
        out, _ = await poster.communicate()
        posted = json.loads(out)
        await asyncio.sleep(args.settle)
        cpu = tree_cpu_seconds(serve_pid) - cpu_before
        driver_cpu = time.process_time() - driver_before
        wall = time.monotonic() - wall_before
        sampler.cancel()
        rss["end"] = tree_rss_mib(serve_pid)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    dropped = closed = 0
    for sock in slow:
        # Read now: a client the server gave up on gets its final event (when its last
        # write was still waiting) or just the end of the connection (write_timeout).
        sock.settimeout(3.0)
        received = bytearray()
        try:
            while chunk := sock.recv(1 << 20):
                received += chunk
            closed += 1
        except TimeoutError:
            pass
        dropped += b"st2.stream__dropped" in received
        sock.close()
    counts = [r.events for r in readers]
    return {
        **posted,
        "clients": args.clients,
        "clients_refused": sum(r.status != 200 for r in readers),
        "events_min": min(counts),
        "events_median": statistics.median(counts),
        "lag_p50_ms": percentile(readers[0].lags, 0.5) * 1000,
        "lag_p99_ms": percentile(readers[0].lags, 0.99) * 1000,
        "slow_clients": args.slow_clients,
        "slow_clients_final_event": dropped,
        "slow_clients_closed_by_server": closed,
        # Shares of one core while posting and settling: the server's process tree, and
        # this driver reading for every client (the machine has two cores).
        "serve_cpu_share": cpu / wall,
        "driver_cpu_share": driver_cpu / wall,
        "rss_mib": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--slow-clients", type=int, default=5)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the last post")
    parser.add_argument("--store", default=None, help="a PostgreSQL URL (default: SQLite)")
    parser.add_argument("--post", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.post:
        print(json.dumps(asyncio.run(post_at_rate(args.post, args.rate, args.duration))))
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as folder:
        env = {
            **os.environ,
            "HOOKYARD_AUTH__ENABLED": "false",
            "HOOKYARD_STREAM__MAX_CLIENTS": str(args.clients + args.slow_clients + 10),
        }
        if args.store:
            env["HOOKYARD_STORE__URL"] = args.store
        command = [sys.executable, "-m", "engine", "serve", "--roles", "api", "--port", str(port)]
        with (Path(folder) / "serve.log").open("wb") as log:
            serve = subprocess.Popen(
                command, cwd=folder, env={**env, "PYTHONPATH": str(REPO)}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if serve.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit((Path(folder) / "serve.log").read_text()) from None
                    time.sleep(0.2)
            time.sleep(1.0)
            result = asyncio.run(drive(args, port, serve.pid))
        finally:
            terminate(serve)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
