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
snapshot travels the same way, only when it changed.

The frames and the progress page are in engine.workers.evaluator_wire, one child as the
pool holds it in engine.workers.evaluator_process, the child itself in
engine.workers.evaluator_child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from engine.config import Settings
from engine.errors import EvaluatorUnavailable
from engine.model.records import (
    ENFORCEMENT_FAILED,
    PROCESSING_FAILED,
    EnforcementOutcome,
    TriggerInstance,
)
from engine.rules.stored import normalize_definition
from engine.workers.evaluator_process import OPEN_TIMEOUT, ChildLost, Culprit, EvaluatorProcess
from engine.workers.evaluator_wire import Verdict

__all__ = ["EvaluatorPool", "RulesInput", "Verdict"]

log = logging.getLogger(__name__)

# Pause before a new child after one failed to start, doubled up to the maximum.
_RESTART_PAUSE = 0.5
_RESTART_PAUSE_MAX = 30.0


class RulesInput:
    """The rules the worker decides with now: a RuleSet and the actions' parameter kinds
    (`runtime`: engine.process.runtime.Runtime)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def key(self) -> tuple[Any, Any]:
        # The objects themselves (not ids): reload and rule sync replace them whole.
        return (self.runtime.ruleset, self.runtime.packs)

    def message(self) -> tuple[Any, ...]:
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


class EvaluatorPool:
    """The rules worker's side: its evaluator children and the chunks sent to them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._size = settings.workers.rules_eval_processes
        self._budget = settings.workers.rules_eval_timeout
        self._idle: asyncio.Queue[EvaluatorProcess] = asyncio.Queue()
        self._children: set[EvaluatorProcess] = set()
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
                *(EvaluatorProcess.spawn(self._settings) for _ in range(self._size))
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
            except ChildLost as lost:
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
                    lost.culprit = Culprit(0, None, "")
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

    def _poisoned(self, instance: TriggerInstance, lost: ChildLost, rules: RulesInput) -> Verdict:
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

    async def _acquire(self) -> EvaluatorProcess:
        deadline = time.monotonic() + OPEN_TIMEOUT
        while True:
            if self._closing:
                raise EvaluatorUnavailable("the rule evaluator is closing")
            try:
                child = await asyncio.wait_for(
                    self._idle.get(), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                raise EvaluatorUnavailable(
                    f"no rule evaluator process was available for {OPEN_TIMEOUT:.0f}s"
                ) from None
            # Not one that ended while idle (its socket closes first): a chunk sent to it
            # would be lost without naming an instance, and blamed on a lone one.
            if child in self._children and not child.closed:
                return child

    def _release(self, child: EvaluatorProcess) -> None:
        if child in self._children and not self._closing:
            self._idle.put_nowait(child)

    def _lost(self, child: EvaluatorProcess) -> None:
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
                child = await EvaluatorProcess.spawn(self._settings)
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

    def _adopt(self, child: EvaluatorProcess) -> None:
        self._children.add(child)
        child.on_exit = self._lost
        child.on_idle = self._release
        self._idle.put_nowait(child)
