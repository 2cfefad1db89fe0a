"""A workflow step child process, run as `python -m engine.workers.step_child`
(engine.workers.step_pool is its parent's handle on it; engine.workers.step_jobs what
it runs).

Frames on its socket (engine.workers.evaluator_wire's framing):
- parent → child: ("open", protocol, settings, memory limit MiB, secrets);
  ("kinds", {action ref: {parameter: kind}}); ("kv", st2kv snapshot);
  ("spec", action ref, spec); ("step", seq, StepJob).
- child → parent: ("ready",) or ("failed", reason); per "step": (seq, "ok", StepOutcome),
  (seq, "error", message) for a workflow error, (seq, "memory", message) after which the
  child exits.

Before each expression it writes the task and the expression into a page shared with
its parent (`PROGRESS_PAGE`), which the parent reads when its watchdog kills the child,
to name what ran out of time. It ignores SIGINT and SIGTERM (its parent stops it by
closing the socket) and dies with its parent.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import resource
import signal
import socket
import struct
import sys
from typing import Any

from engine.config import Settings
from engine.errors import EngineError
from engine.secrets.encryption import require_cipher
from engine.support.child_process import die_with_parent
from engine.support.logs import configure_logging, register_secrets
from engine.workers.evaluator_wire import frame, read_frame
from engine.workers.step_jobs import StepJob, run_step

log = logging.getLogger(__name__)

PROTOCOL = 1
PROGRESS_PAGE = 4096
# The page: the length of the text that follows (utf-8, cut to fit).
PROGRESS_LENGTH = struct.Struct("<I")
_TEXT_MAX = PROGRESS_PAGE - PROGRESS_LENGTH.size
_EXPRESSION_SHOWN = 300


def where_from_page(page: mmap.mmap) -> str:
    """What the child was evaluating, as it last wrote it ("" before any expression)."""
    (length,) = PROGRESS_LENGTH.unpack_from(page, 0)
    length = min(length, _TEXT_MAX)
    start = PROGRESS_LENGTH.size
    return bytes(page[start : start + length]).decode("utf-8", "replace")


class _Stepper:
    def __init__(self, settings: Settings, memory_mb: int, page: mmap.mmap) -> None:
        self.settings = settings
        self.memory_mb = memory_mb
        self._page = page
        self.kinds: dict[str, dict[str, str]] = {}
        self.kv: Any = None
        self.specs: dict[str, Any] = {}
        self._cipher: Any = None

    def decrypt(self, ciphertext: str) -> str:
        # The key is read on first use: most workflows never decrypt.
        if self._cipher is None:
            self._cipher = require_cipher(self.settings)
        return self._cipher.decrypt(ciphertext)

    def progress(self, task: str | None, expression: str) -> None:
        shown = (
            expression
            if len(expression) <= _EXPRESSION_SHOWN
            else (expression[:_EXPRESSION_SHOWN] + "...")
        )
        text = f'task "{task}", expression {shown}' if task else shown
        self._tell(text)

    def _tell(self, text: str) -> None:
        data = text.encode("utf-8")[:_TEXT_MAX]
        start = PROGRESS_LENGTH.size
        self._page[start : start + len(data)] = data
        PROGRESS_LENGTH.pack_into(self._page, 0, len(data))

    def step(self, job: StepJob) -> tuple[str, Any]:
        self._tell("")
        spec = self.specs.get(job.action)
        if spec is None:  # the parent sends it first: a bug
            return "error", f"the workflow {job.action!r} was not sent to its step process"
        try:
            return "ok", run_step(job, spec, self.kv, self.decrypt, self.kinds, self.progress)
        except MemoryError:
            where = where_from_page(self._page)
            message = (
                f"the workflow step exceeded its memory limit of {self.memory_mb} MiB "
                "(workers.workflow_step_memory_mb)" + (f" evaluating {where}" if where else "")
            )
            return "memory", message
        except EngineError as exc:
            return "error", str(exc)
        except Exception as exc:  # a bug must not leave the run re-claimed forever
            log.exception("workflow step of %s failed", job.action)
            return "error", f"{type(exc).__name__}: {exc}"


def _serve(sock: socket.socket, page: mmap.mmap) -> None:
    stream = sock.makefile("rb")

    def read() -> tuple[Any, ...] | None:
        return read_frame(stream)

    opening = read()
    if opening is None:
        return
    _, protocol, settings, memory_mb, secrets = opening
    configure_logging(settings.logging.level, settings.logging.format)
    register_secrets(*secrets)
    if protocol != PROTOCOL:
        sock.sendall(frame(("failed", f"protocol {protocol}, this child speaks {PROTOCOL}")))
        return
    stepper = _Stepper(settings, memory_mb, page)
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sock.sendall(frame(("ready",)))
    while True:
        message = read()
        if message is None:
            return  # the parent closed the socket, or is gone
        kind = message[0]
        if kind == "step":
            _, seq, job = message
            status, answer = stepper.step(job)
            sock.sendall(_reply(seq, status, answer))
            if status == "memory":
                return  # what a MemoryError left behind is not trusted: a new child
        elif kind == "kinds":
            stepper.kinds = message[1]
        elif kind == "kv":
            stepper.kv = message[1]
        elif kind == "spec":
            stepper.specs[message[1]] = message[2]


def _reply(seq: int, status: str, answer: Any) -> bytes:
    try:
        return frame((seq, status, answer))
    except Exception as exc:  # a value that cannot cross (a bug): the step fails alone
        log.exception("workflow step: an answer could not be sent back")
        return frame((seq, "error", f"the step's answer could not be sent back: {exc}"))


def main(argv: list[str]) -> None:
    # The parent decides when this process stops (by closing the socket).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent()
    sock = socket.socket(fileno=int(argv[0]))
    page_fd = int(argv[1])
    page = mmap.mmap(page_fd, PROGRESS_PAGE)
    os.close(page_fd)
    try:
        _serve(sock, page)
    finally:
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
