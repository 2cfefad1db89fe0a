"""The child process of the ``python-script`` runner: load one action module, run it once.

Invoked as ``python -m engine.runners.python_host [--service REQ_FD,REPLY_FD] <result-fd>``.
With ``--service`` the action's ``self.action_service`` talks to the engine over those two
pipes (engine.runners.action_service). Reads a JSON request
``{"entry_point", "parameters", "config", "log_level"}`` from stdin, and writes one JSON
reply to the file descriptor ``<result-fd>``: ``{"status": bool | null, "result": ...}``
or ``{"error": ..., "traceback": ...}``. The action's own stdout and stderr stay what they
are, so its prints never corrupt the reply.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import sys
import time
import traceback
import types
from typing import Any

from engine.runners.action_service import ActionService
from engine.runners.python_action import Action

# Exit codes the parent reads when no reply could be written.
EXIT_ACTION_FAILED = 1
EXIT_BAD_INVOCATION = 2


class ActionLoadError(Exception):
    """Raised in the child when the entry point holds no usable Action class."""


def _alias_stackstorm_base_class() -> None:
    # StackStorm packs import their base class from st2common; point that path here
    # unless a real st2common is installed.
    if importlib.util.find_spec("st2common") is not None:
        return
    names = ("st2common", "st2common.runners", "st2common.runners.base_action")
    for name in names:
        module = types.ModuleType(name)
        module.__path__ = []  # a package, so the submodule import succeeds
        sys.modules[name] = module
    sys.modules["st2common.runners.base_action"].Action = Action  # type: ignore[attr-defined]
    sys.modules["st2common"].runners = sys.modules["st2common.runners"]  # type: ignore[attr-defined]
    sys.modules["st2common.runners"].base_action = sys.modules["st2common.runners.base_action"]  # type: ignore[attr-defined]


def _eventlet_missing(name: str) -> Any:
    raise AttributeError(
        f"eventlet.{name}: eventlet is not installed; Hookyard's stand-in offers only "
        "eventlet.sleep (install eventlet for the rest)"
    )


def _alias_eventlet() -> None:
    # StackStorm runs Python actions with its own libraries importable, eventlet among
    # them, and packs (its examples pack included) call eventlet.sleep; an action runs in
    # its own process here, so a plain sleep is the same thing.
    if importlib.util.find_spec("eventlet") is not None:
        return
    module = types.ModuleType("eventlet")
    module.sleep = time.sleep  # type: ignore[attr-defined]
    module.__getattr__ = _eventlet_missing  # type: ignore[attr-defined]
    sys.modules["eventlet"] = module


def _pack_directory(directory: str) -> str | None:
    # The nearest folder above the action holding pack.yaml: actions may sit in
    # subfolders (the examples pack's actions/pythonactions/isprime.py).
    current = directory
    for _ in range(8):
        if os.path.isfile(os.path.join(current, "pack.yaml")):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
    return None


def load_action_class(entry_point: str) -> type[Action]:
    """The one class deriving from Action that the module at ``entry_point`` defines."""
    directory = os.path.dirname(os.path.abspath(entry_point))
    # Like StackStorm: modules beside the action (so actions/lib as `lib`) are importable,
    # and the pack's own lib/ (StackStorm's packs.enable_common_libs), as for sensors.
    pack_dir = _pack_directory(directory)
    paths = [directory]
    if pack_dir is not None and os.path.isdir(os.path.join(pack_dir, "lib")):
        paths.append(os.path.join(pack_dir, "lib"))
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    module_name = "hookyard_action_" + os.path.splitext(os.path.basename(entry_point))[0]
    spec = importlib.util.spec_from_file_location(module_name, entry_point)
    if spec is None or spec.loader is None:
        raise ActionLoadError(f"{entry_point}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    candidates = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, Action)
        and value is not Action
        and value.__module__ == module_name
    ]
    if len(candidates) != 1:
        found = ", ".join(sorted(c.__name__ for c in candidates)) or "none"
        raise ActionLoadError(
            f"{entry_point}: expected exactly one class deriving from "
            f"engine.runners.python_action.Action, found {found}"
        )
    return candidates[0]


def run_action(
    request: dict[str, Any], service_fds: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Load and run the action; the reply for the parent (exceptions propagate)."""
    action_class = load_action_class(request["entry_point"])
    service = None
    if service_fds is not None:
        requests = os.fdopen(service_fds[0], "w", encoding="utf-8")
        replies = os.fdopen(service_fds[1], "r", encoding="utf-8")
        service = ActionService(action_class.__name__, requests, replies)
    action = action_class(config=request.get("config") or {}, action_service=service)
    value = action.run(**(request.get("parameters") or {}))
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
        return {"status": value[0], "result": value[1]}
    return {"status": None, "result": value}


def _configure_logging(level_name: str) -> None:
    # StackStorm's AUDIT level sits above CRITICAL; anything unknown falls back to DEBUG.
    level = {"AUDIT": logging.CRITICAL + 10}.get(level_name.upper())
    if level is None:
        level = logging.getLevelName(level_name.upper())
    if not isinstance(level, int):
        level = logging.DEBUG
    logging.basicConfig(
        stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _parse_fds(text: str) -> tuple[int, int] | tuple[()]:
    parts = text.split(",")
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        return ()
    return (int(parts[0]), int(parts[1]))


def main(argv: list[str]) -> int:
    service_fds = None
    if len(argv) == 3 and argv[0] == "--service":
        service_fds = _parse_fds(argv[1])
        argv = argv[2:]
    if len(argv) != 1 or not argv[0].isdigit() or service_fds == ():
        print(
            "usage: python -m engine.runners.python_host [--service REQ_FD,REPLY_FD] RESULT_FD",
            file=sys.stderr,
        )
        return EXIT_BAD_INVOCATION
    result_fd = int(argv[0])
    # Processes the action starts must not hold the reply or service channels open.
    for fd in (result_fd, *(service_fds or ())):
        os.set_inheritable(fd, False)
    with os.fdopen(result_fd, "w", encoding="utf-8") as channel:
        try:
            request = json.load(sys.stdin)
            _configure_logging(str(request.get("log_level") or "DEBUG"))
            _alias_stackstorm_base_class()
            _alias_eventlet()
            # default=str: a result JSON cannot hold is reported as its text, not lost.
            reply_text = json.dumps(run_action(request, service_fds), default=str)
            exit_code = 0
        except BaseException as exc:  # the reply must describe any failure, even SystemExit
            details = traceback.format_exc()
            print(details, file=sys.stderr, end="")
            reply = {"error": f"{type(exc).__name__}: {exc}", "traceback": details}
            reply_text = json.dumps(reply, default=str)
            exit_code = EXIT_ACTION_FAILED
        channel.write(reply_text)
    sys.stdout.flush()
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
