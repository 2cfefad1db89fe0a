"""python-script: real action modules run in a child process."""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from pathlib import Path
from typing import Any

from engine.runners import RunRequest, get_runner


def write_action(directory: Path, body: str, name: str = "my_action.py") -> str:
    path = directory / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def make_request(
    entry_point: str,
    parameters: dict[str, Any] | None = None,
    *,
    config: dict[str, Any] | None = None,
    secrets: frozenset[str] = frozenset(),
    timeout: float = 20.0,
    runner_parameters: dict[str, Any] | None = None,
) -> RunRequest:
    return RunRequest(
        execution_id="exec-" + uuid.uuid4().hex[:8],
        runner_parameters=runner_parameters or {},
        action_parameters=parameters or {},
        entry_point=entry_point,
        parameter_positions={},
        secret_parameters=secrets,
        timeout=timeout,
        action_config=config or {},
    )


async def run(request: RunRequest):
    return await get_runner("python-script").run(request)


async def test_action_value_becomes_the_result_and_prints_stay_in_stdout(tmp_path):
    entry = write_action(
        tmp_path,
        """
        from engine.runners.python_action import Action

        class Greet(Action):
            def run(self, name, punctuation="!"):
                print("printing is fine")
                self.logger.info("logging goes to stderr")
                return {"greeting": "hello " + name + punctuation, "region": self.config["region"]}
        """,
    )
    result = await run(make_request(entry, {"name": "ada"}, config={"region": "eu"}))
    assert result.status == "succeeded"
    assert result.result["result"] == {"greeting": "hello ada!", "region": "eu"}
    assert result.result["stdout"] == "printing is fine\n"
    assert "logging goes to stderr" in result.result["stderr"]
    assert result.result["exit_code"] == 0


async def test_tuple_false_fails_with_its_result(tmp_path):
    entry = write_action(
        tmp_path,
        """
        from engine.runners.python_action import Action

        class Check(Action):
            def run(self):
                return (False, {"reason": "disk full"})
        """,
    )
    result = await run(make_request(entry))
    assert result.status == "failed"
    assert result.result["result"] == {"reason": "disk full"}


async def test_tuple_true_succeeds(tmp_path):
    entry = write_action(
        tmp_path,
        """
        from engine.runners.python_action import Action

        class Check(Action):
            def run(self):
                return True, [1, 2]
        """,
    )
    result = await run(make_request(entry))
    assert (result.status, result.result["result"]) == ("succeeded", [1, 2])


async def test_raising_action_fails_with_the_traceback(tmp_path):
    entry = write_action(
        tmp_path,
        """
        from engine.runners.python_action import Action

        class Boom(Action):
            def run(self, value):
                raise ValueError("bad value " + value)
        """,
    )
    result = await run(make_request(entry, {"value": "42"}))
    assert result.status == "failed"
    assert result.result["error"] == "ValueError: bad value 42"
    assert 'raise ValueError("bad value " + value)' in result.result["traceback"]
    assert result.result["exit_code"] == 1
    assert result.result["result"] is None


async def test_stackstorm_pack_action_runs_unchanged(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "__init__.py").write_text("")
    (tmp_path / "lib" / "helpers.py").write_text("def double(x):\n    return x * 2\n")
    entry = write_action(
        tmp_path,
        """
        from st2common.runners.base_action import Action
        from lib.helpers import double

        class Legacy(Action):
            def __init__(self, config=None, action_service=None):
                super(Legacy, self).__init__(config=config, action_service=action_service)

            def run(self, n):
                return double(n)
        """,
    )
    result = await run(make_request(entry, {"n": 21}))
    assert (result.status, result.result["result"]) == ("succeeded", 42)


async def test_a_pack_action_calling_eventlet_sleep_runs_without_eventlet(tmp_path):
    # StackStorm's examples.python-mock-create-vm: `import eventlet; eventlet.sleep(5)`.
    entry = write_action(
        tmp_path,
        """
        import time
        import eventlet
        from st2common.runners.base_action import Action

        class Slow(Action):
            def run(self):
                started = time.monotonic()
                eventlet.sleep(0.2)
                slept = time.monotonic() - started >= 0.2
                try:
                    eventlet.spawn(print)
                except AttributeError as error:
                    return [slept, str(error)]
        """,
    )
    result = await run(make_request(entry))
    assert result.status == "succeeded", result.result
    slept, refused = result.result["result"]
    assert slept is True
    assert "eventlet.spawn: eventlet is not installed" in refused


async def test_module_without_an_action_class_fails_clearly(tmp_path):
    entry = write_action(tmp_path, "x = 1\n")
    result = await run(make_request(entry))
    assert result.status == "failed"
    assert (
        "expected exactly one class deriving from engine.runners.python_action.Action"
        in result.result["error"]
    )


async def test_action_that_kills_its_own_process_fails_without_a_result(tmp_path):
    entry = write_action(
        tmp_path,
        """
        import os
        from engine.runners.python_action import Action

        class Crash(Action):
            def run(self):
                os._exit(5)
        """,
    )
    result = await run(make_request(entry))
    assert result.status == "failed"
    assert result.result["exit_code"] == 5
    assert "without reporting a result" in result.result["error"]


async def test_action_that_sleeps_forever_times_out_and_is_killed(tmp_path):
    pid_file = tmp_path / "pid"
    entry = write_action(
        tmp_path,
        f"""
        import os, time
        from engine.runners.python_action import Action

        class Sleeper(Action):
            def run(self):
                with open({str(pid_file)!r}, "w") as handle:
                    handle.write(str(os.getpid()))
                while True:
                    time.sleep(1)
        """,
    )
    result = await run(make_request(entry, timeout=1.0))
    assert result.status == "timeout"
    assert result.result["exit_code"] == -9
    assert "1 seconds" in result.result["error"]
    pid = int(pid_file.read_text())
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            break
        await asyncio.sleep(0.02)
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


async def test_secret_parameters_are_masked_in_result_and_output(tmp_path):
    entry = write_action(
        tmp_path,
        """
        from engine.runners.python_action import Action

        class Leaky(Action):
            def run(self, api_key):
                print("using", api_key)
                return {"echo": "key is " + api_key}
        """,
    )
    result = await run(make_request(entry, {"api_key": "k-123456"}, secrets=frozenset({"api_key"})))
    assert result.result["result"] == {"echo": "key is ********"}
    assert result.result["stdout"] == "using ********\n"


async def test_large_output_is_truncated_and_result_still_arrives(tmp_path):
    entry = write_action(
        tmp_path,
        """
        import sys
        from engine.runners.python_action import Action

        class Loud(Action):
            def run(self):
                sys.stdout.write("y" * 200000)
                return "x" * 200000
        """,
    )
    request = make_request(entry)
    request = RunRequest(**{**request.__dict__, "max_output": 500})
    result = await run(request)
    assert result.status == "succeeded"
    assert result.result["stdout"] == "y" * 500
    assert result.result["stdout_truncated"] is True
    # The result channel is separate from stdout and not capped by max_output.
    assert result.result["result"] == "x" * 200000


async def test_missing_entry_point_fails(tmp_path):
    result = await run(make_request(str(tmp_path / "absent.py")))
    assert result.status == "failed"
    assert "does not exist" in result.result["error"]
