"""The built wheel, installed outside the checkout, serves a webhook → rule → core.local.

The wheel is built from a copy of the tracked sources (never the checkout itself: a stale
`build/` folder there could put files in the wheel that the sources no longer have) with
`pip wheel --no-deps`, and installed with `--no-deps` into a fresh virtualenv made without
pip. `hookyard serve` then runs from that virtualenv's `bin/`, in an empty folder, with no
config file, no PYTHONPATH and no packs folder: everything it needs beyond the defaults
must come from the wheel — the code, the built-in core pack (package data), the console
script.

Why the dependencies are borrowed, and why that cannot hide a missing file: installing
aiohttp, cryptography, asyncpg... afresh from the package index takes minutes on a loaded
machine, so the new virtualenv sees the test virtualenv's site-packages through a `.pth`
line placed after its own site-packages. That folder holds our project only as an
editable install, whose import hook lives in its own `.pth` file, and `.pth` files in a
folder added this way are not run: `engine` can only be imported from the wheel, which
the test checks before it starts the server. What this borrowing can hide is a dependency
missing from `[project] dependencies` but present in the test virtualenv (e.g. pulled in by
a test extra); the wheel's file list is what this test is about.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.model.apikeys import KEY_PATTERN

ROOT = Path(__file__).parents[2]
BUILD_TIMEOUT = 240
READY_TIMEOUT = 30.0
WAIT_TIMEOUT = 30.0
pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT + 120)]
FINISHED = {"succeeded", "failed", "timeout", "canceled", "abandoned"}

# Folders of the checkout that are not sources (virtualenvs, build output, runtime data).
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", ".st2venv", "build", "dist", "*.egg-info", "__pycache__", "data",
    ".pytest_cache", ".ruff_cache",
)  # fmt: skip

ECHO_RULE = """\
name: say_hello
pack: wheeltest
trigger:
  type: core.st2.webhook
  parameters:
    url: hello
action:
  ref: core.local
  parameters:
    cmd: "echo hello {{ trigger.body.who }}"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment() -> dict[str, str]:
    """This environment without PYTHONPATH (it could reach the checkout) or settings."""
    return {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("HOOKYARD_")
    }


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=clean_environment(),
        **kwargs,
    )
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with only the built wheel installed; returns its bin/ folder."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    wheels = work / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)])
    [wheel] = wheels.glob("hookyard-*.whl")

    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    target = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    site_packages = Path(target.stdout.strip())
    borrowed = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site_packages / "zz_test_dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    # The test virtualenv's pip installs into the new one (pip >= 22.3 has --python).
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    run([*pip, "install", "-q", "--no-deps", str(wheel)])

    where = run([str(python), "-c", "import engine; print(engine.__file__)"], cwd=work)
    assert Path(where.stdout.strip()).is_relative_to(site_packages), where.stdout
    return venv / "bin"


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], workdir: Path, log: Path, url: str) -> None:
        self.proc, self.workdir, self.log, self.url = proc, workdir, log, url
        self.api_key: str | None = None

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def request(self, path: str, body: Any = None) -> Any:
        headers = {"Content-Type": "application/json", "St2-Api-Key": self.api_key or ""}
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited:\n{self.log_text()}"
            try:
                if self.request("/ready").get("ready") is True:
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve not ready after {READY_TIMEOUT} s:\n{self.log_text()}")


@pytest.fixture
def server(installed: Path, tmp_path: Path) -> Iterator[Server]:
    """`hookyard serve` from the wheel, in an empty folder: defaults only, no rules/ yet."""
    workdir = tmp_path / "empty"
    workdir.mkdir()
    for _attempt in range(3):  # another program may take the free port before serve binds it
        port = free_port()
        log = tmp_path / f"serve-{port}.log"
        env = {"PATH": f"{installed}:/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
        env["HOOKYARD_WORKERS__POLL_INTERVAL"] = "0.1"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(installed / "hookyard"), "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        running = Server(proc, workdir, log, f"http://127.0.0.1:{port}")
        try:
            running.wait_ready()
        except AssertionError:
            proc.kill()
            proc.wait(15)
            if "cannot listen" in running.log_text():
                continue
            raise
        break
    else:
        raise AssertionError("hookyard serve could not bind a free port three times")
    try:
        found = KEY_PATTERN.search(running.log_text())
        assert found, f"no admin key printed at start:\n{running.log_text()}"
        running.api_key = found.group(0)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)


def test_the_wheel_serves_a_webhook_into_core_local_from_an_empty_folder(server: Server) -> None:
    core = server.request("/api/v1/packs/core")
    assert "/site-packages/engine/packs/builtin/core" in core["path"], core["path"]
    local = server.request("/api/v1/actions/core.local")
    assert local["runner_type"] == "local-shell-cmd"

    # Started with no rules/ folder; the rule arrives through the reload path.
    rules = server.workdir / "rules"
    rules.mkdir()
    (rules / "hello.yaml").write_text(ECHO_RULE)
    report = server.request("/api/v1/reload", {})
    assert report["errors"] == [] and report["rules"] == 1, report

    accepted = server.request("/webhooks/hello", {"who": "wheel"})
    instance = accepted.get("id") or accepted.get("trigger_instance")
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        executions = server.request(f"/api/v1/executions?trigger_instance={instance}")
        if executions and executions[0]["status"] in FINISHED:
            break
        assert time.monotonic() < deadline, f"no finished execution:\n{server.log_text()}"
        time.sleep(0.1)
    [execution] = executions
    assert execution["action"]["ref"] == "core.local"
    assert execution["status"] == "succeeded", execution
    assert execution["result"]["stdout"].strip() == "hello wheel"
    assert (server.workdir / "data" / "hookyard.db").is_file()  # the default store
