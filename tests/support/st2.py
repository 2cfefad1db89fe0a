"""The official StackStorm CLI (`st2`, st2client 3.9.0), run against a Hookyard server.

st2client pins versions that clash with ours, so it lives in its own virtualenv at
`<repo>/.st2venv`, created once (the `st2_cli` fixture of tests/acceptance/conftest.py)
and reused across runs. Each `st2` runs with an isolated HOME and config file, pointed at
the server with ST2_API_URL (and ST2_API_KEY when the server has API keys on).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.app import REPO_ROOT as ROOT

ST2CLIENT = "st2client==3.9.0"
ST2_VENV = ROOT / ".st2venv"
ST2 = ST2_VENV / "bin" / "st2"
INSTALL_TIMEOUT = 480
COMMAND_TIMEOUT = 60
WAIT_TIMEOUT = 20.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def st2client_installed() -> bool:
    if not ST2.exists():
        return False
    probe = subprocess.run(
        [str(ST2_VENV / "bin" / "python"), "-c", "import st2client; print(st2client.__version__)"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    return probe.returncode == 0 and probe.stdout.strip() == ST2CLIENT.split("==")[1]


class St2:
    """Runs the official `st2` against one Hookyard server."""

    def __init__(self, cli: Path, url: str, api_key: str | None, home: Path) -> None:
        self.cli = cli
        self.url = url
        self.api_key = api_key
        self.home = home
        (home / ".st2").mkdir(parents=True, exist_ok=True)
        self.config_file = home / ".st2" / "config"
        self.config_file.write_text("[general]\nsilence_ssl_warnings = True\n")

    def env(self, with_key: bool = True) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("ST2_", "HOOKYARD_", "HOME"))
        }
        env.update(
            HOME=str(self.home),
            ST2_CONFIG_FILE=str(self.config_file),
            ST2_BASE_URL=self.url,
            ST2_API_URL=self.url + "/api/v1",
            ST2_AUTH_URL=self.url + "/auth/v1",
            ST2_STREAM_URL=self.url + "/stream/v1",
        )
        if self.api_key and with_key:
            env["ST2_API_KEY"] = self.api_key
        return env

    def __call__(self, *args: str, with_key: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.cli), *args],
            env=self.env(with_key),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        result.stdout = ANSI.sub("", result.stdout)
        return result

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout

    def json(self, *args: str) -> Any:
        # `st2 run -j` prints a blank line before the JSON.
        return json.loads(self.ok(*args, "-j"))

    def api(self, path: str, body: Any = None) -> Any:
        """Hookyard's API directly (to set the scene and to check st2's effects)."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["St2-Api-Key"] = self.api_key
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
