"""The rule evaluator's child process, run as `python -m engine.workers.evaluator_child`
(engine.workers.evaluator_process is its parent's handle on it, engine.workers.evaluator_wire
what they exchange).

It reads frames from its socket: rules (definitions in their API shape, rebuilt here into
the same RuleSet), the st2kv snapshot, and chunks of trigger instances, which it decides
one by one with engine.rules.enforce.decide and answers in one frame per chunk. Before
each instance, and each rule within it, it writes where it is into the progress page
shared with its parent, whose watchdog kills it when one instance takes too long. It
ignores SIGINT and SIGTERM (its parent stops it by closing the socket) and dies with
its parent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import mmap
import os
import random
import resource
import signal
import socket
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from engine.config import Settings
from engine.errors import RuleLoadError
from engine.model.records import (
    ENFORCEMENT_FAILED,
    PROCESSED,
    PROCESSING_FAILED,
    EnforcementOutcome,
    TriggerInstance,
)
from engine.rules import RuleSet, load_rule
from engine.rules.enforce import CRITERIA, decide
from engine.rules.explain import traces_to_keep
from engine.rules.kvlookup import st2kv_from_snapshot
from engine.support.child_process import die_with_parent
from engine.support.logs import configure_logging, register_secrets
from engine.workers.evaluator_wire import (
    PAGE,
    PROGRESS,
    PROTOCOL,
    REF_AT,
    REF_MAX,
    frame,
    outcome_to_wire,
    plain,
    read_frame,
)

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Progress:
    """The child's side of the progress page."""

    def __init__(self, page: mmap.mmap) -> None:
        self._page = page
        self._step = 0
        self._seq = 0
        self._index = 0

    def start(self, seq: int, index: int) -> None:
        self._step += 1
        self._seq, self._index = seq & 0xFFFFFFFF, index
        PROGRESS.pack_into(self._page, 0, self._step, 1, 0, self._seq, index, 0)

    def rule(self, rule: Any, step: str) -> None:
        ref = rule.ref.encode("utf-8")[:REF_MAX]
        self._page[REF_AT : REF_AT + len(ref)] = ref
        phase = 1 if step == CRITERIA else 2
        PROGRESS.pack_into(self._page, 0, self._step, 1, phase, self._seq, self._index, len(ref))

    def current_rule(self) -> str | None:
        length = PROGRESS.unpack_from(self._page, 0)[5]
        return bytes(self._page[REF_AT : REF_AT + length]).decode("utf-8", "replace") or None

    def end(self) -> None:
        self._step += 1
        PROGRESS.pack_into(self._page, 0, self._step, 0, 0, self._seq, self._index, 0)


class _Evaluator:
    """What the child holds: the rules, the st2kv snapshot, and how to decide."""

    def __init__(self, settings: Settings, memory_mb: int, progress: _Progress) -> None:
        self.settings = settings
        self.memory_mb = memory_mb
        self.progress = progress
        self.ruleset = RuleSet()
        # Action ref -> its parameters that render their own way (engine.rules.parameter_kinds).
        self.kinds: dict[str, dict[str, str]] = {}
        self.kv: Any = None
        self._cipher: Any = None

    def load_rules(self, definitions: list[tuple[Any, ...]], actions: Mapping[str, Any]) -> None:
        rules = []
        for definition, source, line in definitions:
            try:
                rule = load_rule(definition, origin=source)
            except RuleLoadError as exc:  # it loaded in the parent: a bug, reported
                log.error("rule evaluator: a rule did not load here: %s", exc)
                continue
            rules.append(dataclasses.replace(rule, line=line))
        self.ruleset, _ = RuleSet.build(rules)
        self.kinds = {ref: dict(kinds) for ref, kinds in actions.items()}

    def load_kv(self, snapshot: Any) -> None:
        self.kv = st2kv_from_snapshot(snapshot, self._reveal)

    def _reveal(self, ciphertext: str) -> str:
        # The key is read on first use: most rule sets never decrypt. So is its module:
        # cryptography is 8 MB of this child's memory, for a template that may never run.
        from engine.secrets.encryption import require_cipher

        if self._cipher is None:
            self._cipher = require_cipher(self.settings)
        return self._cipher.decrypt(ciphertext)

    def evaluate(self, seq: int, wires: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        results = []
        for index, (instance_id, trigger, webhook, payload) in enumerate(wires):
            instance = TriggerInstance(
                id=instance_id,
                trigger=trigger,
                payload=payload,
                occurrence_time=_EPOCH,  # not read by decide; not sent
                status="processing",
                webhook=webhook,
            )
            self.progress.start(seq, index)
            try:
                results.append(self._one(instance))
            finally:
                self.progress.end()
        return results

    def _one(self, instance: TriggerInstance) -> tuple[Any, ...]:
        extra = {"trigger_instance": instance.id, "trigger": instance.trigger}
        try:
            outcomes, evaluations = decide(
                self.ruleset,
                instance,
                kv=self.kv,
                action_known=self.kinds.__contains__,
                parameter_kinds=lambda ref: self.kinds.get(ref, {}),
                progress=self.progress.rule,
                max_trigger_depth=self.settings.rules.max_trigger_depth,
            )
            status = PROCESSED
        except MemoryError:
            ref = self.progress.current_rule()
            reason = (
                f"rule evaluation exceeded its memory limit of {self.memory_mb} MiB "
                f"(workers.rules_eval_memory_mb)" + (f" in rule {ref}" if ref else "")
            )
            log.error("trigger instance %s: %s", instance.id, reason, extra=extra)
            return (PROCESSING_FAILED, *_failed_on(ref, reason))
        except Exception:  # a bug in evaluation must not lose the instance
            log.exception("evaluating trigger instance %s failed", instance.id, extra=extra)
            outcomes, evaluations, status = [], [], PROCESSING_FAILED
        explain = self.settings.explain
        traces = traces_to_keep(
            evaluations,
            outcomes,
            failed=status == PROCESSING_FAILED,
            sampled=random.random() < explain.sample_rate,
            max_candidates=explain.max_candidates,
        )
        matched = [result.rule.ref for result in evaluations if result.matched]
        return (status, [outcome_to_wire(o) for o in outcomes], plain(traces), matched)


def _failed_on(ref: str | None, reason: str) -> tuple[Any, ...]:
    if ref is None:
        return [], None, []
    outcome = EnforcementOutcome(rule_ref=ref, status=ENFORCEMENT_FAILED, failure_reason=reason)
    record = {"rule": ref, "matched": False, "reason": reason, "trace": []}
    return [outcome_to_wire(outcome)], [record], []


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
    evaluator = _Evaluator(settings, memory_mb, _Progress(page))
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
        if kind == "eval":
            _, seq, instances = message
            sock.sendall(_reply(seq, evaluator.evaluate(seq, instances)))
            continue
        try:
            if kind == "rules":
                evaluator.load_rules(message[1], message[2])
            elif kind == "kv":
                evaluator.load_kv(message[1])
        except Exception:
            # Deciding with the previous rules (or none) would be silently wrong: this child
            # ends, and the parent starts another and sends it the rules afresh.
            log.exception("rule evaluator: %s could not be loaded; this evaluator ends", kind)
            raise SystemExit(3) from None


def _reply(seq: int, results: list[tuple[Any, ...]]) -> bytes:
    try:
        return frame((seq, results))
    except Exception:  # a value that cannot cross (a bug): its instance fails alone
        log.exception("rule evaluator: a decision could not be sent back")
        kept = []
        for result in results:
            try:
                frame(result)
            except Exception:
                result = (PROCESSING_FAILED, [], None, [])
            kept.append(result)
        return frame((seq, kept))


def main(argv: list[str]) -> None:
    # The parent decides when this process stops (by closing the socket).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent()
    sock = socket.socket(fileno=int(argv[0]))
    page_fd = int(argv[1])
    page = mmap.mmap(page_fd, PAGE)
    os.close(page_fd)
    try:
        _serve(sock, page)
    finally:
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
