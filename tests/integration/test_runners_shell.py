"""local-shell-cmd, local-shell-script and noop, run for real in subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from engine.errors import RegistryError, RunnerError
from engine.runners import (
    RunRequest,
    default_runners,
    get_runner,
    quote_for_shell,
    register,
    runner_names,
)
from engine.runners.noop import NoopRunner
from engine.runners.process import run_process
from engine.runners.shell import script_arguments
from tests.support.processes import alive, gone_within


def make_request(
    *,
    runner_parameters: dict[str, Any] | None = None,
    action_parameters: dict[str, Any] | None = None,
    entry_point: str | None = None,
    positions: dict[str, int] | None = None,
    secrets: frozenset[str] = frozenset(),
    timeout: float = 10.0,
    max_output: int = 1_048_576,
) -> RunRequest:
    return RunRequest(
        execution_id="exec-" + uuid.uuid4().hex[:8],
        runner_parameters=runner_parameters or {},
        action_parameters=action_parameters or {},
        entry_point=entry_point,
        parameter_positions=positions or {},
        secret_parameters=secrets,
        timeout=timeout,
        action_config={},
        max_output=max_output,
    )


async def run_cmd(cmd: str, **kwargs: Any):
    params = {"cmd": cmd, **kwargs.pop("runner_parameters", {})}
    return await get_runner("local-shell-cmd").run(make_request(runner_parameters=params, **kwargs))


def write_script(directory: Path, text: str, executable: bool = True) -> str:
    path = directory / "script.sh"
    path.write_text(text)
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# --- registry ------------------------------------------------------------------


def test_registry_knows_the_builtin_runners_and_each_parameter_has_a_type():
    assert runner_names() == [
        "action-chain",
        "announcement",
        "http-request",
        "inject-trigger",
        "inquirer",
        "local-shell-cmd",
        "local-shell-script",
        "noop",
        "orquesta",
        "python-script",
        "sendwebhook",
    ]
    for name in runner_names():
        for parameter, schema in get_runner(name).parameters.items():
            assert "type" in schema, (name, parameter)


def test_unknown_runner_names_the_known_ones():
    with pytest.raises(RunnerError, match=r"unknown runner type 'mistral-v2'.*local-shell-cmd"):
        get_runner("mistral-v2")


def test_duplicate_runner_is_rejected():
    with pytest.raises(RegistryError, match="already registered"):
        register(NoopRunner())
    registry = default_runners()
    with pytest.raises(RegistryError, match="'noop'"):
        registry.register(NoopRunner())


async def test_noop_succeeds_with_empty_result():
    result = await get_runner("noop").run(make_request(action_parameters={"x": 1}))
    assert (result.status, result.result) == ("succeeded", {})


# --- local-shell-cmd -------------------------------------------------------------


async def test_shell_command_succeeds_with_stackstorm_result_shape():
    result = await run_cmd("echo hello; echo oops >&2")
    assert result.status == "succeeded"
    assert result.result == {
        "stdout": "hello",
        "stderr": "oops",
        "return_code": 0,
        "succeeded": True,
        "failed": False,
    }


async def test_shell_command_json_stdout_is_parsed_as_stackstorm_does():
    result = await run_cmd("""echo '{"a": [1, 2]}'""")
    assert result.result["stdout"] == {"a": [1, 2]}


async def test_cwd_and_env_reach_the_command_and_engine_env_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKYARD_SECRET_KEY", "engine-only")
    result = await run_cmd(
        'pwd; echo "$GREETING"; echo "[$HOOKYARD_SECRET_KEY]"; echo "$ST2_ACTION_EXECUTION_ID"',
        runner_parameters={"cwd": str(tmp_path), "env": {"GREETING": "hi there"}},
    )
    lines = result.result["stdout"].splitlines()
    assert lines[0] == str(tmp_path.resolve())
    assert lines[1] == "hi there"
    assert lines[2] == "[]"
    assert lines[3].startswith("exec-")


async def test_non_zero_exit_fails_with_the_code():
    result = await run_cmd("echo partial; exit 3")
    assert result.status == "failed"
    assert result.result["return_code"] == 3
    assert result.result["failed"] is True
    assert result.result["stdout"] == "partial"


async def test_missing_cmd_and_missing_cwd_fail_with_an_error():
    result = await get_runner("local-shell-cmd").run(make_request())
    assert result.status == "failed"
    assert "cmd" in result.result["error"]
    result = await run_cmd("true", runner_parameters={"cwd": "/nonexistent-dir-hookyard"})
    assert result.status == "failed"
    assert "cannot start" in result.result["error"]


async def test_quoted_injection_in_a_command_stays_literal():
    target = f"/tmp/pwned-{uuid.uuid4().hex}"
    value = f"; touch {target}"
    result = await run_cmd(f"echo {quote_for_shell(value)}")
    assert result.status == "succeeded"
    assert result.result["stdout"] == value
    assert not os.path.exists(target)


async def test_shell_timeout_kills_the_whole_process_tree():
    # The background sleep is a grandchild: killing only /bin/sh would orphan it.
    result = await run_cmd("sleep 100 & echo $!; sleep 100", timeout=0.5)
    assert result.status == "timeout"
    assert result.result["return_code"] == -9
    assert "0.5 seconds" in result.result["error"]
    grandchild = int(result.result["stdout"])  # partial output was kept
    assert await gone_within(grandchild, 2.0)


async def test_output_beyond_max_output_is_truncated_and_marked():
    result = await run_cmd("head -c 100000 /dev/zero | tr '\\0' x; echo err >&2", max_output=1000)
    assert result.status == "succeeded"
    assert result.result["stdout"] == "x" * 1000
    assert result.result["stdout_truncated"] is True
    assert "stderr_truncated" not in result.result


async def test_secret_values_are_masked_in_output():
    result = await run_cmd(
        'echo "token=$TOKEN"; echo "s3cr3t-value" >&2',
        runner_parameters={"env": {"TOKEN": "s3cr3t-value"}},
        action_parameters={"token": "s3cr3t-value"},
        secrets=frozenset({"token"}),
    )
    assert result.result["stdout"] == "token=********"
    assert result.result["stderr"] == "********"


async def test_commands_run_under_bash_as_in_stackstorm():
    # StackStorm runs commands with bash: its packs use bash syntax.
    result = await run_cmd('[[ "a b" == "a "* ]] && arr=(x y) && echo "${arr[1]}" {p,q}')
    assert result.status == "succeeded", result.result
    assert result.result["stdout"] == "y p q"


async def test_sudo_runs_through_sudo_n_or_is_refused_clearly(tmp_path, monkeypatch):
    # No sudo on PATH: refused, saying so.
    monkeypatch.setenv("PATH", str(tmp_path))
    missing = await run_cmd("true", runner_parameters={"sudo": True})
    assert missing.status == "failed"
    assert "sudo is not installed on this host" in missing.result["error"]
    # A sudo on PATH (here a stand-in that records its arguments, then runs the rest).
    fake = tmp_path / "sudo"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/args"\nshift 2\nexec "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    ran = await run_cmd("echo as root", runner_parameters={"sudo": True})
    assert ran.status == "succeeded", ran.result
    assert ran.result["stdout"] == "as root"
    assert (tmp_path / "args").read_text().split()[:2] == ["-n", "--"]
    # A password is never handed over.
    given = await run_cmd("true", runner_parameters={"sudo": True, "sudo_password": "pw"})
    assert given.status == "failed" and "NOPASSWD" in given.result["error"]


# --- local-shell-script ----------------------------------------------------------


def test_script_arguments_follow_stackstorm_serialisation():
    params = {
        "first": "a b",
        "second": None,
        "flag": True,
        "off": False,
        "empty": "",
        "items": ["x", "y"],
        "obj": {"k": 1},
        "count": 3,
        "third": True,
    }
    positions = {"first": 0, "second": 1, "third": 2}
    assert script_arguments(params, positions) == [
        "--flag",
        "--items=x,y",
        '--obj={"k": 1}',
        "--count=3",
        "a b",
        "",
        "1",
    ]
    assert script_arguments({"n": 1}, {}, kwarg_op="-") == ["-n=1"]


async def test_script_gets_positional_and_named_arguments(tmp_path):
    script = write_script(
        tmp_path, '#!/bin/sh\nfor arg in "$@"; do printf "<%s>\\n" "$arg"; done\n'
    )
    result = await get_runner("local-shell-script").run(
        make_request(
            entry_point=script,
            action_parameters={"name": "my name", "count": 2, "second": "two", "first": "one"},
            positions={"first": 0, "second": 1},
        )
    )
    assert result.status == "succeeded"
    assert result.result["stdout"].splitlines() == [
        "<--name=my name>",
        "<--count=2>",
        "<one>",
        "<two>",
    ]


async def test_script_without_exec_bit_runs_under_its_shebang(tmp_path):
    script = write_script(tmp_path, '#!/bin/sh\necho "ran $1"\n', executable=False)
    result = await get_runner("local-shell-script").run(
        make_request(entry_point=script, action_parameters={"x": "v"}, positions={"x": 0})
    )
    assert result.result["stdout"] == "ran v"
    assert not os.access(script, os.X_OK)  # the pack file was left as it was


async def test_script_injection_attempt_is_passed_literally(tmp_path):
    target = f"/tmp/pwned-{uuid.uuid4().hex}"
    script = write_script(tmp_path, '#!/bin/sh\nprintf "%s|%s" "$1" "$2"\n')
    value = f"; touch {target}"
    result = await get_runner("local-shell-script").run(
        make_request(
            entry_point=script,
            action_parameters={"a": value, "b": f"$(touch {target})"},
            positions={"a": 0, "b": 1},
        )
    )
    assert result.status == "succeeded"
    assert result.result["stdout"] == f"{value}|$(touch {target})"
    assert not os.path.exists(target)


async def test_script_failure_and_missing_entry_point(tmp_path):
    script = write_script(tmp_path, "#!/bin/sh\necho bad >&2\nexit 7\n")
    result = await get_runner("local-shell-script").run(make_request(entry_point=script))
    assert (result.status, result.result["return_code"], result.result["stderr"]) == (
        "failed",
        7,
        "bad",
    )
    missing = await get_runner("local-shell-script").run(
        make_request(entry_point=str(tmp_path / "nope.sh"))
    )
    assert missing.status == "failed"
    assert "does not exist" in missing.result["error"]


async def test_script_secret_argument_is_masked(tmp_path):
    script = write_script(tmp_path, '#!/bin/sh\necho "got $1"\n')
    result = await get_runner("local-shell-script").run(
        make_request(
            entry_point=script,
            action_parameters={"password": "hunter2-xyz"},
            positions={"password": 0},
            secrets=frozenset({"password"}),
        )
    )
    assert result.result["stdout"] == "got ********"


async def test_cancelled_run_kills_the_process_tree(tmp_path):
    pid_file = tmp_path / "pid"
    leader_file = tmp_path / "leader"
    task = asyncio.ensure_future(
        run_cmd(f"echo $$ > {leader_file}; sleep 100 & echo $! > {pid_file}; sleep 100")
    )
    for _ in range(250):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.02)
    grandchild = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The leader was reaped before the cancellation finished: no zombie, nothing left
    # for the garbage collector to warn about as a still-running subprocess.
    with pytest.raises(ProcessLookupError):
        os.kill(int(leader_file.read_text()), 0)
    assert await gone_within(grandchild, 2.0)


def living_sleeps(marker: str) -> list[int]:
    """Live processes running exactly `sleep <marker>` (argv is NUL-separated)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", marker.encode()] and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_living_sleeps_sees_a_running_sleep():
    # The check below is only as good as this matcher.
    marker = f"{uuid.uuid4().int % 10**6}.5"
    child = subprocess.Popen(["sleep", marker])
    try:
        for _ in range(200):  # until the child has exec'd sleep
            if living_sleeps(marker):
                break
            time.sleep(0.01)
        assert living_sleeps(marker) == [child.pid]
    finally:
        child.kill()
        child.wait()
    assert living_sleeps(marker) == []


@pytest.mark.parametrize("cancels", [1, 2])
@pytest.mark.parametrize("turns_before_cancel", range(1, 12))
async def test_run_cancelled_while_starting_leaves_no_process(turns_before_cancel, cancels):
    # The child runs before create_subprocess_exec returns (its pipes are still being
    # connected): a cancellation landing in that window — or a second one landing while
    # the first is being handled — must still kill the whole group, and the run return.
    marker = f"{uuid.uuid4().int % 10**6}.{turns_before_cancel}"
    task = asyncio.ensure_future(run_cmd(f"sleep {marker} & sleep {marker}"))
    for _ in range(turns_before_cancel):
        await asyncio.sleep(0)
    for _ in range(cancels):
        task.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)
    for _ in range(100):
        if not living_sleeps(marker):
            break
        await asyncio.sleep(0.02)
    assert living_sleeps(marker) == []


async def test_a_timed_out_run_returns_even_if_a_process_escaped_its_group(tmp_path):
    # A member that moved to its own session keeps the output pipes open and is out of
    # reach of the group kill: the run must still end, with what was read so far.
    escaped_pid = tmp_path / "escaped"
    cmd = (
        f"trap '' TERM; echo started; setsid sh -c 'echo $$ > {escaped_pid}; exec sleep 60' & "
        "sleep 100"
    )
    try:
        result = await asyncio.wait_for(run_cmd(cmd, timeout=0.5), 20)
        assert result.status == "timeout"
        assert "started" in result.result["stdout"]
    finally:
        if escaped_pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(escaped_pid.read_text()), signal.SIGKILL)


async def test_runs_cancelled_while_starting_leave_no_descriptor_open():
    # The python-script runner's result channel is a pipe made before the start; its
    # read end must be closed when the start is cancelled too.
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    for turns in range(1, 21):
        task = asyncio.ensure_future(
            run_process(
                ["/bin/sh", "-c", "sleep 30"],
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                timeout=10,
                max_output=1000,
                with_result_channel=True,
            )
        )
        for _ in range(turns % 4 + 1):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)
    # A few descriptors may come and go with the loop's own bookkeeping; one leaked per
    # run would be 20.
    assert open_fds() - before < 5
