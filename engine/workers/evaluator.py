"""The rule evaluator: trigger instances decided in child processes, under a watched budget.

Deciding an instance runs code that rule authors and webhook senders steer: regular
expressions, Jinja templates, filters such as ``from_yaml_string``. Limits inside that
code (regex time limits, sandbox bounds, engine.support.safeyaml) catch what they know of; what
they miss would hold the event loop that also answers HTTP, for good. So the rules worker
never evaluates in its own process: it sends chunks of claimed instances to
`workers.rules_eval_processes` child processes, and a watchdog outside them enforces a
wall-clock budget per instance (`workers.rules_eval_timeout`):

- Each child writes, into a small shared memory page, which instance of which chunk it
  is on and which rule (criteria or action parameters); a memory store, nearly free.
- The watchdog reads that page a few times a second. An instance that holds the child
  past the budget gets it killed (SIGKILL); the instance ends processing_failed with a
  failed enforcement on that rule saying why, and the rest of its chunk is evaluated
  again by a new child. A poisoned instance is thus decided on its first claim.
- A child that dies otherwise (a crash, the kernel's OOM killer, kill -9) names the
  instance it was on as a suspect: evaluated again alone, it is processing_failed only if
  it takes a second child down with it. Nothing else in the chunk is lost.
- With `workers.rules_eval_memory_mb`, each child runs under an address-space limit: an
  evaluation that needs more fails with MemoryError inside the child (a template error
  like any other, or "exceeded its memory limit" outside templates).

The child holds the rules: when the worker's rule set or pack set changes (reload,
rules stored through the API), the next chunk is preceded by the rule definitions in
their API shape (compiled templates do not cross processes) and the actions' parameter
kinds (shell commands, URLs); the child rebuilds the same RuleSet from them. The st2kv
snapshot travels the same way, only when it changed. Frames on a socket pair: a 4-byte
big-endian length, then a marshal, or a pickle for what marshal cannot hold (both ends
are the same Python and the same engine).
- parent → child: ("open", protocol, settings, memory limit, secrets); ("rules",
  [(definition, source, line)], {action ref: ((parameter, kind), ...)}); ("kv", snapshot);
  ("eval", seq, [(id, trigger, webhook, payload), ...]).
- child → parent: ("ready",) or ("failed", reason); per "eval": (seq, [(status,
  [outcome as a tuple], traces or None, [matched rule ref])]).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import mmap
import os
import pickle
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.config import Settings
from engine.errors import EvaluatorUnavailable
from engine.model.records import (
    ENFORCEMENT_FAILED,
    PROCESSING_FAILED,
    EnforcementOutcome,
    TriggerInstance,
)
from engine.support.child_process import child_environment, python_module_command, reap
from engine.workers.evaluator_child import (
    LENGTH,
    PAGE,
    PHASES,
    PROGRESS,
    PROTOCOL,
    REF_AT,
    REF_MAX,
    frame,
    instance_to_wire,
    outcome_from_wire,
    unframe,
)

log = logging.getLogger(__name__)

# How long a child may take to start (imports, rules) before it counts as not started.
_OPEN_TIMEOUT = 60.0
# Pause before a new child after one failed to start, doubled up to the maximum.
_RESTART_PAUSE = 0.5
_RESTART_PAUSE_MAX = 30.0
# Seconds a child whose socket closed has to exit before it is killed.
_EXIT_WAIT = 5.0
# A child holding a chunk without evaluating any of it (reading it, building rules) for
# this long past the budget is stuck: killed, and the chunk evaluated again elsewhere.
_STUCK_MARGIN = 30.0


@dataclass(frozen=True)
class Verdict:
    """What was decided for one trigger instance (its lease token is the worker's)."""

    status: str  # PROCESSED | PROCESSING_FAILED
    outcomes: list[EnforcementOutcome]
    traces: list[dict[str, Any]] | None
    matched: list[str]  # refs of the rules that matched (metrics)


class RulesInput:
    """The rules the worker decides with now: a RuleSet and the actions' parameter kinds
    (`runtime`: engine.process.runtime.Runtime)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def key(self) -> tuple[Any, Any]:
        # The objects themselves (not ids): reload and rule sync replace them whole.
        return (self.runtime.ruleset, self.runtime.packs)

    def message(self) -> tuple[Any, ...]:
        from engine.rules.stored import normalize_definition

        runtime = self.runtime
        definitions = [
            (normalize_definition(rule.to_api()), rule.source, rule.line)
            for rule in runtime.ruleset
        ]
        actions = {
            f"{pack_ref}.{name}": tuple(
                sorted(runtime.parameter_kinds(f"{pack_ref}.{name}").items())
            )
            for pack_ref, pack in runtime.packs.packs.items()
            for name in pack.actions
        }
        return ("rules", definitions, actions)


class _Culprit:
    """Where a child was when it ended: the instance index in its chunk, rule and phase."""

    def __init__(self, index: int, rule: str | None, phase: str) -> None:
        self.index = index
        self.rule = rule
        self.phase = phase


class _ChildLost(Exception):
    """A child ended before answering a chunk (`culprit`: where it was, if anywhere)."""

    def __init__(self, culprit: _Culprit | None, timed_out: bool, how: str) -> None:
        super().__init__(how)
        self.culprit = culprit
        self.timed_out = timed_out
        self.how = how


class EvaluatorPool:
    """The rules worker's side: its evaluator children and the chunks sent to them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._size = settings.workers.rules_eval_processes
        self._budget = settings.workers.rules_eval_timeout
        self._idle: asyncio.Queue[_Child] = asyncio.Queue()
        self._children: set[_Child] = set()
        self._spawning: set[asyncio.Task[None]] = set()
        self._closing = False
        self._rules_message: tuple[Any, tuple[Any, ...]] | None = None
        # Children started to replace others (tests read it).
        self.restarts = 0

    @property
    def pids(self) -> list[int]:
        return [child.process.pid for child in self._children]

    async def start(self) -> None:
        """Start the children; EvaluatorUnavailable when one does not start."""
        try:
            children = await asyncio.gather(
                *(_Child.spawn(self._settings) for _ in range(self._size))
            )
        except BaseException:
            await self.close()
            raise
        for child in children:
            self._adopt(child)

    def problem(self) -> str | None:
        """Why instances cannot be decided now (for /ready), or None."""
        if not self._children and not self._closing:
            return "the rule evaluator process is not running (restarting)"
        return None

    async def close(self) -> None:
        self._closing = True
        for task in list(self._spawning):
            task.cancel()
        for task in list(self._spawning):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(
            *(child.stop(self._settings.server.shutdown_grace) for child in list(self._children))
        )
        self._children.clear()

    async def decide(
        self, instances: list[TriggerInstance], kv: Any, rules: RulesInput
    ) -> list[Verdict]:
        """A verdict per instance, in order. Raises EvaluatorUnavailable when no child
        could evaluate them (the caller releases the instances)."""
        verdicts: dict[int, Verdict] = {}
        todo = list(range(len(instances)))
        suspects: set[int] = set()
        while todo:
            # A suspect (its child died on it) is tried again alone: a second death is its.
            alone = [i for i in todo if i in suspects][:1]
            batch = alone or list(todo)
            child = await self._acquire()
            try:
                results = await child.evaluate(
                    [instances[i] for i in batch], kv, self._rules_for(rules)
                )
            except _ChildLost as lost:
                self._lost(child)
                if lost.culprit is not None and lost.culprit.index < len(batch):
                    culprit = batch[lost.culprit.index]
                elif len(batch) > 1:
                    # Dead outside every instance (reading the chunk, answering it): the
                    # chunk itself may be what kills it (too large for the memory
                    # limit), and sending it again would end the same way for ever.
                    # Each of its instances is tried alone instead (a second death is its).
                    suspects.update(batch)
                    continue
                else:  # alone, so the death is its own
                    culprit = batch[0]
                    lost.culprit = _Culprit(0, None, "")
                if lost.timed_out or culprit in suspects:
                    verdicts[culprit] = self._poisoned(instances[culprit], lost, rules)
                    todo.remove(culprit)
                    suspects.discard(culprit)
                else:
                    suspects.add(culprit)
                continue
            self._release(child)
            for index, result in zip(batch, results, strict=True):
                verdicts[index] = result
                todo.remove(index)
                suspects.discard(index)
        return [verdicts[i] for i in range(len(instances))]

    def _rules_for(self, rules: RulesInput) -> tuple[Any, tuple[Any, ...]]:
        key = rules.key()
        cached = self._rules_message
        if cached is None or cached[0][0] is not key[0] or cached[0][1] is not key[1]:
            cached = self._rules_message = (key, rules.message())
        return cached

    def _poisoned(self, instance: TriggerInstance, lost: _ChildLost, rules: RulesInput) -> Verdict:
        culprit = lost.culprit
        assert culprit is not None
        if lost.timed_out:
            what = f"rule evaluation exceeded its budget of {self._budget:g} s"
            what += " (workers.rules_eval_timeout)"
        else:
            what = f"the rule evaluator process died evaluating it twice ({lost.how})"
        where = f" while {culprit.phase}" if culprit.phase else ""
        ruleset = rules.runtime.ruleset
        if culprit.rule is not None:
            refs = [culprit.rule]
            reason = f"{what}{where} of rule {culprit.rule}; it is not evaluated again"
        else:
            refs = [r.ref for r in ruleset.candidates(instance.trigger, instance.webhook)]
            reason = f"{what}; it is not evaluated again"
        log.error(
            "trigger instance %s: %s; marked processing_failed",
            instance.id,
            reason,
            extra={"trigger_instance": instance.id, "trigger": instance.trigger},
        )
        outcomes = [
            EnforcementOutcome(rule_ref=ref, status=ENFORCEMENT_FAILED, failure_reason=reason)
            for ref in refs
        ]
        traces = []
        for ref in refs:
            record: dict[str, Any] = {"rule": ref, "matched": False, "reason": reason, "trace": []}
            rule = ruleset.get(ref)
            if rule is not None:
                record.update(rule_type=rule.rule_type, action=rule.action_ref)
            traces.append(record)
        return Verdict(PROCESSING_FAILED, outcomes, traces, [])

    async def _acquire(self) -> _Child:
        deadline = time.monotonic() + _OPEN_TIMEOUT
        while True:
            if self._closing:
                raise EvaluatorUnavailable("the rule evaluator is closing")
            try:
                child = await asyncio.wait_for(
                    self._idle.get(), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                raise EvaluatorUnavailable(
                    f"no rule evaluator process was available for {_OPEN_TIMEOUT:.0f}s"
                ) from None
            # Not one that ended while idle (its socket closes first): a chunk sent to it
            # would be lost without naming an instance, and blamed on a lone one.
            if child in self._children and not child._writer.is_closing():
                return child

    def _release(self, child: _Child) -> None:
        if child in self._children and not self._closing:
            self._idle.put_nowait(child)

    def _lost(self, child: _Child) -> None:
        if child not in self._children:
            return
        self._children.discard(child)
        if not self._closing:
            self.restarts += 1
            task = asyncio.get_running_loop().create_task(self._add_child())
            self._spawning.add(task)
            task.add_done_callback(self._spawning.discard)

    async def _add_child(self) -> None:
        pause = _RESTART_PAUSE
        while not self._closing:
            try:
                child = await _Child.spawn(self._settings)
            except EvaluatorUnavailable as exc:
                log.error("%s; trying again in %.1fs", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RESTART_PAUSE_MAX)
                continue
            if self._closing:
                await child.stop(0)
                return
            self._adopt(child)
            return

    def _adopt(self, child: _Child) -> None:
        self._children.add(child)
        child.on_exit = self._lost
        child.on_idle = self._release
        self._idle.put_nowait(child)


class _Child:
    """One evaluator process: its socket, its progress page, its watchdog."""

    def __init__(self, process, reader, writer, page: mmap.mmap, budget: float) -> None:
        self.process = process
        self._reader: asyncio.StreamReader = reader
        self._writer: asyncio.StreamWriter = writer
        self._page = page
        self._budget = budget
        self._seq = itertools.count()
        self._call: tuple[int, asyncio.Future[Any]] | None = None
        self._rules_key: Any = None
        self._kv: Any = None
        self._timed_out = False
        self._stuck = False
        self.on_exit: Callable[[_Child], None] | None = None
        # Called when a chunk whose caller was cancelled is answered: the child is free.
        self.on_idle: Callable[[_Child], None] | None = None
        self._gone: _ChildLost | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def spawn(cls, settings: Settings) -> _Child:
        ours, theirs = socket.socketpair()
        page_fd = _page_file()
        try:
            process = await asyncio.create_subprocess_exec(
                *python_module_command(
                    "engine.workers.evaluator_child", str(theirs.fileno()), str(page_fd)
                ),
                pass_fds=(theirs.fileno(), page_fd),
                stdin=asyncio.subprocess.DEVNULL,
                env=child_environment(),
                # Its own session: a Ctrl-C to the parent's group does not reach it.
                start_new_session=True,
            )
            page = mmap.mmap(page_fd, PAGE)
        except OSError as exc:
            ours.close()
            raise EvaluatorUnavailable(f"cannot start a rule evaluator process: {exc}") from exc
        except BaseException:  # cancelled while starting (the pool closing): no fd left open
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(page_fd)
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except BaseException:
            ours.close()
            await asyncio.shield(reap(process))
            raise
        child = cls(process, reader, writer, page, settings.workers.rules_eval_timeout)
        from engine.support.logs import scrubber

        opening = (
            "open",
            PROTOCOL,
            settings,
            settings.workers.rules_eval_memory_mb,
            scrubber.secrets(),
        )
        try:
            writer.write(frame(opening))
            answer = await asyncio.wait_for(_read_frame(reader), _OPEN_TIMEOUT)
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as exc:
            await child._kill()
            raise EvaluatorUnavailable(
                f"the rule evaluator process did not start: {exc!r}"
            ) from exc
        except BaseException:  # cancelled: the child must not outlive the call
            await asyncio.shield(child._kill())
            raise
        if answer[0] != "ready":
            await child._kill()
            raise EvaluatorUnavailable(f"the rule evaluator process did not start: {answer[1]}")
        loop = asyncio.get_running_loop()
        child._tasks = [
            loop.create_task(child._listen(), name="rule evaluator replies"),
            loop.create_task(child._watch(), name="rule evaluator watchdog"),
        ]
        return child

    async def evaluate(
        self, instances: list[TriggerInstance], kv: Any, rules: tuple[Any, tuple[Any, ...]]
    ) -> list[Verdict]:
        """The verdicts on `instances`; `rules` is (their key, the rules message), sent
        first when this child has other rules. Raises _ChildLost."""
        key, rules_message = rules
        if self._gone is not None:
            raise self._gone
        seq = next(self._seq)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._call = (seq, future)
        frames = []
        if self._rules_key is not key:
            frames.append(frame(rules_message))
            self._rules_key = key
        if self._kv is not kv:
            frames.append(frame(("kv", kv)))
            self._kv = kv
        frames.append(frame(("eval", seq, [instance_to_wire(i) for i in instances])))
        try:
            # A closed socket: the reply reader sees the same end and fails the future.
            with contextlib.suppress(OSError):
                self._writer.write(b"".join(frames))
                await self._writer.drain()
            # Shielded: a cancelled caller leaves the chunk to finish (or be killed).
            reply = await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(self._answered_late)
            raise
        finally:
            if future.done():
                self._call = None
        return [
            Verdict(status, [outcome_from_wire(o) for o in outcomes], traces, matched)
            for status, outcomes, traces, matched in reply
        ]

    def _answered_late(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # the child ended: on_exit handles it
        self._call = None
        if self.on_idle is not None:
            self.on_idle(self)

    async def _watch(self) -> None:
        """Kill the child when one instance holds it past the budget (or when it holds a
        chunk without evaluating any of it for much longer)."""
        period = max(0.02, min(0.25, self._budget / 10))
        last: tuple[int, int] | None = None
        since = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            if self._call is None:
                last = None
                continue
            step, busy, _, seq, _, _ = PROGRESS.unpack_from(self._page, 0)
            if (step, seq) != last:
                last, since = (step, seq), now
                continue
            if busy and now - since > self._budget:
                self._timed_out = True
            elif not busy and now - since > self._budget + _STUCK_MARGIN:
                self._stuck = True
            else:
                continue
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            return

    async def _listen(self) -> None:
        how = "its socket closed"
        try:
            while True:
                try:
                    reply = await _read_frame(self._reader)
                except pickle.UnpicklingError as exc:
                    raise ValueError(str(exc)) from exc
                call = self._call
                if call is not None and call[0] == reply[0] and not call[1].done():
                    call[1].set_result(reply[1])
        except (OSError, EOFError, asyncio.IncompleteReadError, ValueError) as exc:
            how = type(exc).__name__
        finally:
            for task in self._tasks:
                if task is not asyncio.current_task():
                    task.cancel()
            self._writer.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), _EXIT_WAIT)
        except TimeoutError:
            await reap(self.process)
        code = self.process.returncode
        if self._timed_out:
            how = f"killed after {self._budget:g} s on one instance"
        elif self._stuck:
            how = "killed: it held a chunk without evaluating it"
        elif code is not None and code < 0:
            how = f"killed by signal {signal.Signals(-code).name}"
        elif code is not None:
            how = f"exit code {code}"
        call = self._call
        self._call = None
        self._gone = _ChildLost(None, False, how)
        if call is not None and not call[1].done():
            culprit = self._culprit(call[0])
            call[1].set_exception(_ChildLost(culprit, self._timed_out, how))
            log.error(
                "the rule evaluator process ended (%s)%s; starting another",
                how,
                f" on instance {culprit.index} of its chunk" if culprit else "",
                extra={"pid": self.process.pid},
            )
        if self.on_exit is not None:
            self.on_exit(self)

    def _culprit(self, seq: int) -> _Culprit | None:
        """Where the (dead) child was in chunk `seq`, from its progress page."""
        _, busy, phase, page_seq, index, length = PROGRESS.unpack_from(self._page, 0)
        if not busy or page_seq != seq & 0xFFFFFFFF:
            return None
        ref = bytes(self._page[REF_AT : REF_AT + min(length, REF_MAX)]).decode("utf-8", "replace")
        return _Culprit(index, ref or None, PHASES.get(phase, ""))

    async def stop(self, grace: float) -> None:
        """Close the socket (the child exits at its next read); kill after `grace`."""
        self.on_exit = None
        self._writer.close()
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            await self._kill()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _kill(self) -> None:
        self._writer.close()
        await reap(self.process)


def _page_file() -> int:
    """A file descriptor of one shared, zeroed page (memory only, where possible)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("hookyard-evaluator-progress")
    else:  # pragma: no cover - not Linux
        with tempfile.TemporaryFile() as handle:
            fd = os.dup(handle.fileno())
    os.ftruncate(fd, PAGE)
    return fd


async def _read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
    return unframe(await reader.readexactly(length))
