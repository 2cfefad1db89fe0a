"""The ``python-script`` runner: a Python action class run in a child process.

The child (:mod:`engine.runners.python_host`) gets its request as JSON on stdin and answers
on a dedicated pipe, so what the action prints is reported as ``stdout`` untouched. Running
in a separate process group lets a timeout kill the action and anything it started, and a
crash of the action never reaches the engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from engine.errors import RunnerError
from engine.runners.action_service_relay import ServiceChannel
from engine.runners.base import FAILED, SUCCEEDED, TIMEOUT, RunRequest, RunResult, mask_secrets
from engine.runners.pack_virtualenv import ENGINE_ROOT
from engine.runners.process import (
    MAX_RESULT_CHANNEL_BYTES,
    ProcessOutcome,
    action_environment,
    run_process,
)

# StackStorm's exit code for a timed-out action (-SIGKILL).
TIMEOUT_EXIT_CODE = -9
_LOG_LEVELS = ["AUDIT", "CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


class PythonScriptRunner:
    name = "python-script"
    # Facts from StackStorm's python_runner/runner.yaml, so packs overriding them still load.
    parameters = {
        "env": {
            "type": "object",
            "description": "Environment variables for the action, over a minimal safe set.",
        },
        "timeout": {
            "type": "integer",
            "default": 600,
            "description": "Seconds before the action and everything it started are killed.",
        },
        "log_level": {
            "type": "string",
            "default": "DEBUG",
            "enum": _LOG_LEVELS,
            "description": "Level of the action's self.logger (written to stderr).",
        },
        "debug": {"type": "boolean", "default": False, "required": False,
                  "description": "Accepted for pack compatibility; no effect."},
        "content_version": {"type": "string", "required": False,
                            "description": "Accepted for pack compatibility; no effect."},
    }  # fmt: skip

    async def run(self, request: RunRequest) -> RunResult:
        empty = {"result": None, "stdout": "", "stderr": "", "exit_code": None}
        try:
            if not request.entry_point:
                raise RunnerError("python-script needs an entry_point module")
            if not os.path.isfile(request.entry_point):
                raise RunnerError(f"entry point module {request.entry_point!r} does not exist")
            payload = json.dumps(
                {
                    "entry_point": request.entry_point,
                    "parameters": request.action_parameters,
                    "config": request.action_config,
                    "log_level": request.runner_parameters.get("log_level") or "DEBUG",
                },
                default=str,
            ).encode()
            argv = [_interpreter(request), "-m", "engine.runners.python_host"]
            channel = ServiceChannel(request)
            serving = asyncio.ensure_future(channel.serve())
            argv += ["--service", channel.child_argument()]
            try:
                outcome = await run_process(
                    argv,
                    env=self._environment(request),
                    # The action's own directory, as `-m` puts the working directory on
                    # sys.path.
                    cwd=os.path.dirname(request.entry_point),
                    timeout=request.timeout,
                    max_output=request.max_output,
                    stdin_data=payload,
                    with_result_channel=True,
                    watch=request.process_watch,
                    on_output=request.output_sink,
                    child_fds=channel.child_fds,
                )
            finally:
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)
                channel.close()
        except RunnerError as exc:
            return RunResult(FAILED, {**empty, "error": str(exc)})
        return _python_result(outcome, request)

    @staticmethod
    def _environment(request: RunRequest) -> dict[str, str]:
        env = action_environment(request.execution_id, request.runner_parameters.get("env"))
        # The child imports engine.runners.python_host and engine.runners.python_action from here.
        extra_path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = ENGINE_ROOT + (os.pathsep + extra_path if extra_path else "")
        # Output reaches the pipes as it is printed, so it streams live (st2 does the same).
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env


def _interpreter(request: RunRequest) -> str:
    return request.python or sys.executable


def _python_result(outcome: ProcessOutcome, request: RunRequest) -> RunResult:
    if outcome.result_channel_overflow:
        reply = {"error": f"action result larger than {MAX_RESULT_CHANNEL_BYTES} bytes"}
    else:
        reply = _parse_reply(outcome.result_channel)
    output: dict[str, Any] = {
        "result": reply.get("result"),
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
        "exit_code": TIMEOUT_EXIT_CODE if outcome.timed_out else outcome.exit_code,
    }
    if outcome.stdout_truncated:
        output["stdout_truncated"] = True
    if outcome.stderr_truncated:
        output["stderr_truncated"] = True

    if outcome.timed_out:
        status = TIMEOUT
        output["error"] = f"Action failed to complete in {request.timeout:g} seconds"
    elif "error" in reply:
        status = FAILED
        output["error"] = reply["error"]
        output["traceback"] = reply.get("traceback", "")
    elif not reply:
        status = FAILED
        output["error"] = (
            f"action process exited with code {outcome.exit_code} without reporting a result"
        )
    elif outcome.exit_code == 0 and reply.get("status") is not False:
        status = SUCCEEDED
    else:
        status = FAILED
    return RunResult(status, mask_secrets(output, request.secret_values()))


def _parse_reply(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        reply = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return {"error": "action process sent an unreadable result"}
    return reply if isinstance(reply, dict) else {}
