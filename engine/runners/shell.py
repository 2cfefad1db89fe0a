"""The local shell runners: ``local-shell-cmd`` and ``local-shell-script`` (StackStorm's).

``local-shell-cmd`` hands the action author's ``cmd`` to ``bash -c`` (``/bin/sh`` where
there is no bash); values rendered into it must be quoted with :func:`quote_for_shell` by
whoever renders them.
``local-shell-script`` never builds a shell string: the script and its arguments are argv.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from typing import Any

from engine.errors import RunnerError
from engine.runners.base import (
    FAILED,
    SUCCEEDED,
    TIMEOUT,
    RunRequest,
    RunResult,
    failed,
    mask_secrets,
)
from engine.runners.process import ProcessOutcome, action_environment, run_process

DEFAULT_KWARG_OP = "--"
# StackStorm's exit code for a timed-out local action (-SIGKILL).
TIMEOUT_EXIT_CODE = -9


def quote_for_shell(value: Any) -> str:
    """``value`` as one shell word that the shell passes on literally."""
    return shlex.quote(str(value))


def _common_parameters() -> dict[str, dict]:
    # Facts from StackStorm's local_runner/runner.yaml, so packs overriding them still load.
    return {
        "cwd": {"type": "string", "description": "Working directory the action runs in."},
        "env": {
            "type": "object",
            "description": "Environment variables for the action, over a minimal safe set.",
        },
        "kwarg_op": {
            "type": "string",
            "default": DEFAULT_KWARG_OP,
            "description": 'Prefix of named script arguments, i.e. "--" or "-".',
        },
        "sudo": {
            "type": "boolean",
            "default": False,
            "description": "Run through `sudo -n` (passwordless sudo; refused where sudo is "
            "not installed).",
        },
        "sudo_password": {
            "type": "string",
            "default": None,
            "required": False,
            "secret": True,
            "description": "Not supported: a run given one is refused (use NOPASSWD sudo).",
        },
        "timeout": {
            "type": "integer",
            "default": 60,
            "description": "Seconds before the action and everything it started are killed.",
        },
    }


def shell() -> str:
    """The shell commands run under: bash where it exists, as StackStorm runs them (its
    packs use bash syntax: `[[ ]]`, arrays, `$'...'`), else /bin/sh. Values a rule or a
    workflow puts into a command are quoted for POSIX shells, which bash reads alike."""
    return shutil.which("bash") or "/bin/sh"


def with_sudo(argv: list[str], runner_parameters: dict, name: str) -> list[str]:
    """`sudo: true`: the command runs through `sudo -n` (never prompting: a sudo that
    wants a password fails with sudo's own message) — refused clearly where sudo is not
    installed, or when a password would have to be handed over."""
    if not runner_parameters.get("sudo"):
        return argv
    if runner_parameters.get("sudo_password"):
        raise RunnerError(
            f"{name}: sudo_password is not supported; give this user passwordless sudo "
            "(NOPASSWD) for the commands it runs"
        )
    sudo = shutil.which("sudo")
    if sudo is None:
        raise RunnerError(f"{name}: sudo: true, but sudo is not installed on this host")
    return [sudo, "-n", "--", *argv]


class _LocalShellBase:
    name = ""
    parameters: dict[str, dict] = {}

    async def run(self, request: RunRequest) -> RunResult:
        try:
            argv = with_sudo(self._argv(request), request.runner_parameters, self.name)
            env = action_environment(request.execution_id, request.runner_parameters.get("env"))
            outcome = await run_process(
                argv,
                env=env,
                cwd=request.runner_parameters.get("cwd") or None,
                timeout=request.timeout,
                max_output=request.max_output,
                watch=request.process_watch,
                on_output=request.output_sink,
            )
        except RunnerError as exc:
            return failed(
                str(exc), succeeded=False, failed=True, return_code=None, stdout="", stderr=""
            )
        return _shell_result(outcome, request)

    def _argv(self, request: RunRequest) -> list[str]:
        raise NotImplementedError


class LocalShellCommandRunner(_LocalShellBase):
    name = "local-shell-cmd"
    parameters = {
        "cmd": {"type": "string", "description": "Command run by bash (or /bin/sh) on this host."},
        **_common_parameters(),
    }

    def _argv(self, request: RunRequest) -> list[str]:
        cmd = request.runner_parameters.get("cmd")
        if not isinstance(cmd, str) or not cmd.strip():
            raise RunnerError("local-shell-cmd needs a non-empty runner parameter 'cmd'")
        return [shell(), "-c", cmd]


class LocalShellScriptRunner(_LocalShellBase):
    name = "local-shell-script"
    parameters = {
        **_common_parameters(),
        "debug": {"type": "boolean", "default": False, "required": False,
                  "description": "Accepted for pack compatibility; no effect."},
        "content_version": {"type": "string", "required": False,
                            "description": "Accepted for pack compatibility; no effect."},
    }  # fmt: skip

    def _argv(self, request: RunRequest) -> list[str]:
        script = request.entry_point
        if not script:
            raise RunnerError("local-shell-script needs an entry_point script")
        if not os.path.isfile(script):
            raise RunnerError(f"entry point script {script!r} does not exist")
        kwarg_op = request.runner_parameters.get("kwarg_op") or DEFAULT_KWARG_OP
        arguments = script_arguments(
            request.action_parameters, request.parameter_positions, kwarg_op
        )
        return [*_interpreter_for(script), *arguments]


def script_arguments(
    parameters: dict[str, Any], positions: dict[str, int], kwarg_op: str = DEFAULT_KWARG_OP
) -> list[str]:
    """argv for a script, as StackStorm builds it: named arguments, then positional ones.

    Named: ``<kwarg_op>name=value``; None and "" are left out; True is the bare flag
    ``<kwarg_op>name`` and False is left out. Positional (by ``position`` order): None
    becomes "" so later positions do not shift; True/False are "1"/"0".
    Lists are comma-joined and objects JSON in both forms.
    """
    named: list[str] = []
    for name, value in parameters.items():
        if name in positions or value is None or value == "":
            continue
        if isinstance(value, bool):
            if value:
                named.append(f"{kwarg_op}{name}")
            continue
        named.append(f"{kwarg_op}{name}={_serialise(value)}")
    ordered = sorted(positions.items(), key=lambda item: item[1])
    positional = [_serialise(parameters.get(name)) for name, _ in ordered]
    return named + positional


def _serialise(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value) if value else ""
    return str(value)


def _interpreter_for(script: str) -> list[str]:
    """How to start ``script`` without a shell and without changing its file mode.

    An executable script runs directly. StackStorm makes pack scripts executable before
    running them; instead a non-executable one runs under its ``#!`` interpreter (split as
    the kernel does: the interpreter and at most one argument), or the shell without one.
    """
    if os.access(script, os.X_OK):
        return [script]
    try:
        with open(script, "rb") as handle:
            first_line = handle.readline(4096)
    except OSError as exc:
        raise RunnerError(f"cannot read entry point script {script!r}: {exc.strerror}") from exc
    if first_line.startswith(b"#!"):
        interpreter_line = first_line[2:].decode("utf-8", errors="replace").strip()
        parts = interpreter_line.split(None, 1)
        if parts:
            return [*parts, script]
    return [shell(), script]


def _strip_shell_chars(text: str) -> str:
    # StackStorm drops one trailing newline (and carriage return) from shell output.
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text


def _maybe_json(text: str, truncated: bool) -> Any:
    # StackStorm returns stdout/stderr that is valid JSON as the parsed value.
    if truncated:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _shell_result(outcome: ProcessOutcome, request: RunRequest) -> RunResult:
    secrets = request.secret_values()
    exit_code = TIMEOUT_EXIT_CODE if outcome.timed_out else outcome.exit_code
    succeeded = exit_code == 0
    result: dict[str, Any] = {
        "failed": not succeeded,
        "succeeded": succeeded,
        "return_code": exit_code,
        "stdout": _maybe_json(
            mask_secrets(_strip_shell_chars(outcome.stdout), secrets), outcome.stdout_truncated
        ),
        "stderr": _maybe_json(
            mask_secrets(_strip_shell_chars(outcome.stderr), secrets), outcome.stderr_truncated
        ),
    }
    if outcome.stdout_truncated:
        result["stdout_truncated"] = True
    if outcome.stderr_truncated:
        result["stderr_truncated"] = True
    if outcome.timed_out:
        result["error"] = f"Action failed to complete in {request.timeout:g} seconds"
        return RunResult(TIMEOUT, result)
    return RunResult(SUCCEEDED if succeeded else FAILED, result)
