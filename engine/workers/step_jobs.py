"""One workflow step as plain data, and its run through a conductor.

The workflows role (engine.workers.workflows, engine.workers.chains) never runs a
conductor in its own process: the expressions it evaluates are an author's, over values
a webhook sender chose, and a C-level operation (a huge string repeat, a catastrophic
regex) cannot be interrupted from inside. So a step travels as a `StepJob` to a step
child process (engine.workers.step_child, held by engine.workers.step_pool, whose
watchdog kills it past the budget), which runs `run_step` here and answers a
`StepOutcome`. The store stays in the parent: it unseals the state before and seals
and writes it after, in one transaction as before.

`run_step` is pure but for the `progress` callback: given the workflow's (or chain's)
spec, the job, the st2kv snapshot and the actions' parameter kinds, it returns the new
state, the requests (ActionRequest / LinkRequest), the final status and result, and
whether a secret was decrypted into the state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.model.records import CANCELING, RUNNING
from engine.rules.kvlookup import KvSnapshot, st2kv_from_snapshot
from engine.workers.workflow_settling import settled_status
from engine.workflows.chain import COMPLETED as CHAIN_COMPLETED
from engine.workflows.chain import ChainConductor, ChainScope
from engine.workflows.conductor import WorkflowConductor
from engine.workflows.rerun import rerun
from engine.workflows.statuses import COMPLETED, PAUSED, PAUSING

__all__ = ["KINDS", "RESUMING", "StepJob", "StepOutcome", "run_step"]

RESUMING = "resuming"  # the workflow execution's status while a resume is applied
# What a job asks for: an Orquesta workflow started, re-run from tasks (its original's
# state continued) or stepped; an action chain started or stepped.
START, RERUN, STEP = "start", "rerun", "step"
CHAIN_START, CHAIN_STEP = "chain_start", "chain_step"
KINDS = (START, RERUN, STEP, CHAIN_START, CHAIN_STEP)
# Marks a conductor state paused because a task waits for an answer, not by a person.
PAUSED_BY_INQUIRY = "paused_by_inquiry"
# Marks a run whose values a person with the right to run it gave (engine.workers.
# workflows.inputs_trusted): its expressions may write whole shell commands and URLs, as
# StackStorm's do. Without it they are data (engine.workflows.expressions.
# evaluate_parameter): quoted where a task's command puts them, refused as the program.
TRUSTED_INPUTS = "hookyard_trusted_inputs"
HELD = (PAUSING, PAUSED)  # conductor statuses that start no task


@dataclass(frozen=True)
class StepJob:
    """What a conductor needs besides its spec, the st2kv snapshot and parameter kinds."""

    kind: str
    action: str  # the workflow action's ref (names its spec)
    status: str = RUNNING  # the workflow execution's status (canceling, pausing...)
    state: dict[str, Any] | None = None  # unsealed; None to start
    # Orquesta start: the workflow's input. Chains: the action's parameters.
    inputs: Mapping[str, Any] = field(default_factory=dict)
    # Orquesta start: the runtime context (ctx(st2)). Chains: action_context.
    context: Mapping[str, Any] = field(default_factory=dict)
    # The children that ended. Orquesta: (task, route, status, result, item_id);
    # chains: (link, status, result, execution id, created_at, updated_at).
    finished: tuple[tuple[Any, ...], ...] = ()
    active: int = 0  # children still running
    # Of those: subworkflows paused, subworkflows pausing or resuming, inquiries pending
    # (engine.workers.workflow_settling decides from them).
    paused: int = 0
    settling: int = 0
    asking: int = 0
    display_published: bool = True
    max_links: int = 1000
    # A re-run from tasks (RERUN): the tasks to run again, the with-items ones to reset.
    rerun_tasks: tuple[str, ...] = ()
    rerun_reset: tuple[str, ...] = ()
    # Starts: whether the run's values come from a person allowed to run it, not from a
    # trigger (recorded in the state as TRUSTED_INPUTS for the steps that follow).
    trusted: bool = False


@dataclass(frozen=True)
class StepOutcome:
    state: dict[str, Any]
    requests: list[Any]  # engine.workflows.conductor.ActionRequest or chain.LinkRequest
    final: str | None
    result: Any
    # A secret datastore value was decrypted in this step: the stored state may hold it.
    revealed: bool = False
    # The size of the answer as it crossed from the child (the parent's hint of how
    # large the state is: a small one is bounded and stored without a thread).
    wire_bytes: int = 0


Progress = Callable[[str | None, str], None]


class _Secrets:
    """st2kv for one step: Orquesta's lookup and the chains' Jinja view of a snapshot,
    noting whether any secret was decrypted."""

    def __init__(self, snapshot: KvSnapshot | None, decrypt: Callable[[str], str]) -> None:
        self.snapshot = snapshot or ((), ())
        self._decrypt = decrypt
        self.revealed = False

    def reveal(self, ciphertext: str) -> str:
        plaintext = self._decrypt(ciphertext)
        self.revealed = True
        return plaintext

    def lookup(self) -> Callable[[str, bool], Any]:
        system, own = self.snapshot
        scopes = {
            "system": {name: (value, secret) for name, value, secret in system},
            "user": {name: (value, secret) for name, value, secret in own},
        }

        def st2kv(key: str, decrypt: bool) -> Any:
            scope, _, name = key.partition(".")
            if scope not in scopes or not name:
                # As StackStorm (st2common.util.keyvalue): only "system." names the system
                # scope; any other key is the workflow user's own.
                scope, name = "user", key
            value, secret = scopes[scope][name]  # KeyError: no such key
            return self.reveal(value) if secret and decrypt else value

        return st2kv

    def view(self) -> dict[str, Any]:
        return st2kv_from_snapshot(self.snapshot, self.reveal)


def run_step(
    job: StepJob,
    spec: Any,
    snapshot: KvSnapshot | None,
    decrypt: Callable[[str], str],
    kinds: Mapping[str, Mapping[str, str]],
    progress: Progress | None = None,
) -> StepOutcome:
    """The conductor's answer to `job` (engine errors propagate: the workflow fails)."""
    secrets = _Secrets(snapshot, decrypt)
    if job.kind in (START, RERUN, STEP):
        outcome = _orquesta(job, spec, secrets, kinds, progress)
    else:
        outcome = _chain(job, spec, secrets, kinds, progress)
    state, requests, final, result = outcome
    return StepOutcome(state, requests, final, result, secrets.revealed)


def _orquesta(
    job: StepJob,
    spec: Any,
    secrets: _Secrets,
    kinds: Mapping[str, Mapping[str, str]],
    progress: Progress | None,
) -> tuple[dict, list[Any], Any, Any]:
    trusted = _trusted(job)

    def parameter_kinds(ref: str) -> Mapping[str, str]:
        if trusted:
            return {}  # the person's own values: written as the author wrote them
        return kinds.get(ref, {})  # an unknown action: none (running it fails anyway)

    if job.kind == START:
        conductor, requests = WorkflowConductor.start(
            spec,
            job.inputs,
            runtime_context=job.context,
            st2kv=secrets.lookup(),
            parameter_kinds=parameter_kinds,
            progress=progress,
        )
        if trusted:
            conductor.state[TRUSTED_INPUTS] = True
        return conductor.state, requests, *_end_of(conductor, 0, len(requests))
    assert job.state is not None
    conductor = WorkflowConductor(
        spec, job.state, st2kv=secrets.lookup(), parameter_kinds=parameter_kinds, progress=progress
    )
    if job.kind == RERUN:
        # The original's state continued by this execution (engine.workflows.rerun): its
        # tasks' results kept, the named tasks requested again.
        contexts = conductor.state["contexts"]
        contexts[0] = {**contexts[0], **job.context}
        # The re-run's own trust, not the original's.
        conductor.state.pop(TRUSTED_INPUTS, None)
        if job.trusted:
            conductor.state[TRUSTED_INPUTS] = True
        requests = rerun(conductor, list(job.rerun_tasks), list(job.rerun_reset))
        return conductor.state, requests, *_end_of(conductor, 0, len(requests))
    requests = []
    answered = False
    if job.status == CANCELING and conductor.status not in (*COMPLETED, CANCELING):
        conductor.cancel()  # no new task starts; it ends once its running ones have
    elif job.status == PAUSING and conductor.status == RUNNING:
        conductor.pause()  # no new task starts; paused once its running ones have ended
    elif job.status == RESUMING and conductor.status in HELD:
        requests.extend(conductor.resume())
    elif conductor.state.get(PAUSED_BY_INQUIRY) and not job.asking and conductor.status in HELD:
        # Paused for an inquiry that was answered while that pause was being decided
        # (the answer found the workflow still running, so did not resume it).
        requests.extend(conductor.resume())
        answered = True
    if conductor.status == RUNNING:
        conductor.state.pop(PAUSED_BY_INQUIRY, None)
        if job.asking and job.status in (RUNNING, RESUMING):
            # StackStorm (Orquesta): a task pending an answer pauses its workflow; running
            # tasks finish, no new one starts, and an answer resumes it.
            conductor.pause()
            conductor.state[PAUSED_BY_INQUIRY] = True
    for task, route, status, result, item_id in job.finished:
        requests.extend(conductor.task_finished(task, route, status, result, item_id))
    final, result = _end_of(conductor, job.active, len(requests))
    if final is None:
        final = _settled(job, conductor.status, len(requests), answered)
    return conductor.state, requests, final, result


def _chain(
    job: StepJob,
    spec: Any,
    secrets: _Secrets,
    kinds: Mapping[str, Mapping[str, str]],
    progress: Progress | None,
) -> tuple[dict, list[Any], Any, Any]:
    scope = ChainScope(
        parameters=job.inputs,
        action_context=job.context,
        st2kv=secrets.view(),
        action_exists=kinds.__contains__,
        parameter_kinds=lambda ref: {} if _trusted(job) else kinds.get(ref, {}),
        display_published=job.display_published,
        max_links=job.max_links,
        progress=None if progress is None else (lambda where: progress(None, where)),
    )
    if job.kind == CHAIN_START:
        conductor, requests = ChainConductor.start(spec, scope)
        if job.trusted:
            conductor.state[TRUSTED_INPUTS] = True
        return conductor.state, requests, *_end_of(conductor, 0, len(requests))
    assert job.state is not None
    conductor = ChainConductor(spec, job.state, scope)
    requests = []
    if job.status == CANCELING:
        conductor.cancel()  # no link starts; it ends once its running link has
    elif job.status == PAUSING and conductor.status == RUNNING:
        conductor.pause()  # no link starts; paused once its running link has ended
    elif job.status == RESUMING and conductor.status in (PAUSING, PAUSED):
        requests.extend(conductor.resume())
    for name, status, result, execution_id, created_at, updated_at in job.finished:
        requests.extend(
            conductor.link_finished(
                name,
                status,
                result,
                execution_id=execution_id,
                created_at=created_at,
                updated_at=updated_at,
                resumed=job.status in (PAUSED, RESUMING),
            )
        )
    final, result = _end_of(conductor, job.active, len(requests))
    if final is None:
        final = _settled(job, conductor.status, len(requests))
    return conductor.state, requests, final, result


def _trusted(job: StepJob) -> bool:
    """A start's trust comes with the job; a step's was recorded in its state (for a
    re-run, the job's own replaces the original's)."""
    if job.kind in (START, CHAIN_START, RERUN):
        return job.trusted
    return bool((job.state or {}).get(TRUSTED_INPUTS))


def _end_of(conductor: Any, active: int, requested: int) -> tuple[Any, Any]:
    """(final status, result) once the conductor has ended and no task runs any more."""
    ended = CHAIN_COMPLETED if isinstance(conductor, ChainConductor) else COMPLETED
    if conductor.status not in ended or active or requested:
        return None, None
    return conductor.status, conductor.result()


def _settled(job: StepJob, conducted: str, requested: int, answered: bool = False) -> str | None:
    return settled_status(
        job.status,
        conducted,
        requested,
        active=job.active,
        waiting=job.paused + job.asking,
        settling=job.settling,
        answered=answered,
    )
