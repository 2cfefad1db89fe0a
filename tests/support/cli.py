"""The `hookyard` client commands run against a real `hookyard serve` (acceptance tests).

The server loads the repo's packs and example rules (rules/); where it has API keys on,
the first admin key it prints at start is what the client sends.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import urllib.request
from typing import Any

from engine.config import Settings
from engine.model.apikeys import KEY_PATTERN
from tests.support.app import REPO_ROOT

ROOT = REPO_ROOT
EXAMPLE_RULES = ROOT / "rules"
GITHUB_PUSH = json.loads((EXAMPLE_RULES / "samples" / "github_push.json").read_text())
ALL_ROLES = "api,rules,actions"
COMMAND_TIMEOUT = 60


class Client:
    """Runs `python -m engine ...` against one server, with its URL and key in the env."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url
        self.api_key = api_key

    def env(self) -> dict[str, str]:
        # No HOOKYARD_* from the test's own environment: only the server under test.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["HOOKYARD_URL"] = self.url
        if self.api_key:
            env["HOOKYARD_API_KEY"] = self.api_key
        return env

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def post_push(self) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "push"}
        if self.api_key:
            headers["St2-Api-Key"] = self.api_key
        request = urllib.request.Request(
            self.url + "/webhooks/github-push",
            data=json.dumps(GITHUB_PUSH["body"]).encode(),
            headers=headers,
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
            return json.load(response)


def start_server(serve):
    """Serve with the example rules and, where the server has API keys, auth on.

    A server with auth on prints its first admin key once, at start, on stdout: that key
    is what the client sends.
    """
    has_auth = "auth" in {f.name for f in dataclasses.fields(Settings)}
    env = {"HOOKYARD_AUTH__ENABLED": "true"} if has_auth else {}
    server = serve.start(roles=ALL_ROLES, env=env, args=["--rules", str(EXAMPLE_RULES)])
    found = KEY_PATTERN.search(server.log_text())
    assert found or not has_auth, f"no admin key printed at start:\n{server.log_tail()}"
    return server, found.group(0) if found else None


def start_client(serve) -> Client:
    server, api_key = start_server(serve)
    return Client(server.url, api_key)
