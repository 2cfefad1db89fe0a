"""Real `hookyard serve` processes on loopback, for the acceptance tests.

`ServeLauncher.start(...)` runs `python -m engine serve` in its own working folder with a
free port, logs (stdout and stderr) to a file, and waits until `GET /ready` answers 200.
`ServeLauncher.run(...)` runs a serve command that is expected to exit (bad arguments,
busy port) and returns its CompletedProcess with stderr kept apart. `close()` kills every
process still running (the fixtures in tests/acceptance/conftest.py call it at teardown).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tests.support.app import REPO_ROOT as ROOT

READY_TIMEOUT = 20.0
EXIT_TIMEOUT = 15.0
# Workers poll often so tests do not wait on the 0.5 s default. API keys are left off:
# these tests are about the pipeline (auth has its own tests), and a key printed once by
# whichever process starts first on an empty store would tie every test to that output.
TEST_SETTINGS = {
    "HOOKYARD_WORKERS__POLL_INTERVAL": "0.1",
    "HOOKYARD_AUTH__ENABLED": "false",
}
# Without the actions role requested executions stay `requested`: what these tests check.
DEFAULT_ROLES = "api,rules"

# The webhook `load`: matches bodies with kind "load", renders `n` into core.noop.
# The matchregex pattern backtracks exponentially on a run of "a" not followed by "c"
# before its `.` alternative matches: a body's `pad` ("a" * k + "b") makes each evaluation
# take as long as a test needs, so the rules worker can be kept behind the ingest and a
# kill finds it holding claimed work. pad "b" costs nothing.
LOAD_WEBHOOK = "load"
LOAD_RULE_REF = "acceptance.load_rule"
LOAD_RULE = """\
name: load_rule
pack: acceptance
description: Acceptance-test rule for the load webhook.
trigger:
  type: core.st2.webhook
  parameters:
    url: load
criteria:
  trigger.body.kind:
    type: equals
    pattern: load
  trigger.body.pad:
    type: matchregex
    pattern: "(a+)+c|."
action:
  ref: core.noop
  parameters:
    n: "{{ trigger.body.n }}"
"""


def write_load_rule(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "load.yaml"
    path.write_text(LOAD_RULE, encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without HOOKYARD_* settings (they would leak into serve)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(TEST_SETTINGS)
    env.update(extra or {})
    return env


@dataclass
class ServeProcess:
    """One running `hookyard serve`."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log_path: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def admin_key(self) -> str:
        """The admin API key the first start on an empty store prints (auth on), once."""
        keys = [
            line.strip() for line in self.log_text().splitlines() if line.strip().startswith("hy_")
        ]
        assert len(keys) == 1, self.log_tail()
        return keys[0]

    def kill(self) -> int:
        """SIGKILL: no drain, no cleanup — a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(EXIT_TIMEOUT)

    def terminate(self, timeout: float = EXIT_TIMEOUT) -> int:
        """SIGTERM and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServeExited(self)
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=1) as response:
                    if response.status == 200 and json.load(response).get("ready") is True:
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError(
            f"hookyard serve on {self.url} not ready after {timeout} s:\n{self.log_tail()}"
        )


class ServeExited(AssertionError):
    """Raised when a serve process exits before it is ready."""

    def __init__(self, process: ServeProcess) -> None:
        self.process = process
        super().__init__(
            f"hookyard serve exited with {process.proc.returncode} before it was ready:\n"
            f"{process.log_tail()}"
        )


class ServeLauncher:
    """Starts serve processes for one test; `close()` kills whatever is still running."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.rules_dir = tmp_path / "rules"
        write_load_rule(self.rules_dir)
        # Restarts in one test share this file unless a test passes its own store.
        self.default_store = f"sqlite:///{tmp_path / 'hookyard.db'}"
        self.webhook = LOAD_WEBHOOK
        self.rule_ref = LOAD_RULE_REF
        self.processes: list[ServeProcess] = []
        self._log_files: list[BinaryIO] = []

    def start(
        self,
        *,
        store: str | None = None,
        roles: str = DEFAULT_ROLES,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        name: str = "serve",
        wait: bool = True,
    ) -> ServeProcess:
        """Start a serve process; with wait=True, return once /ready answers 200."""
        for _attempt in range(3):
            process = self._spawn(store, roles, env, args, name)
            if not wait:
                return process
            try:
                process.wait_ready()
            except ServeExited as exc:
                # Another program may have taken the free port between lookup and bind.
                if "cannot listen" in exc.process.log_text():
                    continue
                raise
            return process
        raise AssertionError("hookyard serve could not bind a free port three times")

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -m engine serve ARGS` to completion (for commands that must fail)."""
        workdir = self._workdir("run")
        return subprocess.run(
            [sys.executable, "-m", "engine", "serve", *args],
            cwd=workdir,
            env=serve_environment(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def close(self) -> None:
        for process in self.processes:
            if process.proc.poll() is None:
                process.proc.kill()
                process.proc.wait(EXIT_TIMEOUT)
        for handle in self._log_files:
            handle.close()

    def _spawn(self, store, roles, env, args, name) -> ServeProcess:
        workdir = self._workdir(name)
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--store",
            store or self.default_store,
            # core.noop comes from the built-in core pack: no packs folder is needed.
            "--rules",
            str(self.rules_dir),
        ]
        command += ["--roles", roles, *args]
        log_path = workdir / "serve.log"
        log_file = log_path.open("wb")
        self._log_files.append(log_file)
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=serve_environment(env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C on pytest does not reach it, teardown does.
            start_new_session=True,
        )
        process = ServeProcess(proc, port, workdir, log_path)
        self.processes.append(process)
        return process

    def _workdir(self, name: str) -> Path:
        index = 0
        while (self.tmp_path / f"{name}-{index}").exists():
            index += 1
        path = self.tmp_path / f"{name}-{index}"
        path.mkdir(parents=True)
        return path
