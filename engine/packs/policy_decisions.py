"""What an action's policies decide, from plain data: no store, no clock.

- `retry_after`: whether a finished execution is re-run (``action.retry``) and with what
  context — StackStorm's shape: the new execution's ``context.policies.retry`` holds
  ``applied_policy``, ``retry_count`` and ``retried_liveaction_id`` (the original's id).
- `concurrency_slots`: the slots an execution must hold to run (``action.concurrency``,
  ``action.concurrency.attr``); the store takes them atomically (engine.store.ops.policies).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.model.records import FAILED, TIMEOUT
from engine.packs.policies import Policy
from engine.packs.policy_types import CONCURRENCY, CONCURRENCY_BY_ATTR, RETRY

# What a policy's `retry_on` retries.
RETRIED_STATUS = {"failure": FAILED, "timeout": TIMEOUT}
CANCEL = "cancel"


@dataclass(frozen=True)
class Retry:
    context: dict[str, Any]
    delay: float
    policy: str


@dataclass(frozen=True)
class Slot:
    """One of `threshold` places for executions sharing `key`; `on_full`: delay or cancel."""

    key: str
    threshold: int
    on_full: str
    policy: str


def retry_after(
    policies: Sequence[Policy],
    execution_id: str,
    status: str,
    context: Mapping[str, Any] | None,
    parent: str | None = None,
) -> Retry | None:
    """The re-run an ``action.retry`` policy asks for when an execution ended in `status`.

    A task of a workflow is not retried here (StackStorm leaves that to the workflow's own
    retry), nor one past ``max_retry_count``."""
    if parent:
        return None
    context = dict(context or {})
    for policy in policies:
        if policy.policy_type != RETRY or not policy.enabled:
            continue
        if RETRIED_STATUS.get(policy.parameters.get("retry_on")) != status:
            continue
        done = _retry_count(context)
        if done + 1 > int(policy.parameters.get("max_retry_count", 2)):
            return None
        new_context = copy.deepcopy(context)
        new_context["policies"] = {
            "retry": {
                "applied_policy": policy.ref,
                "retry_count": done + 1,
                "retried_liveaction_id": execution_id,
            }
        }
        return Retry(new_context, float(policy.parameters.get("delay") or 0), policy.ref)
    return None


def _retry_count(context: Mapping[str, Any]) -> int:
    retry = (context.get("policies") or {}).get("retry") or {}
    count = retry.get("retry_count", 0) if isinstance(retry, Mapping) else 0
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def concurrency_slots(policies: Sequence[Policy], parameters: Mapping[str, Any]) -> list[Slot]:
    """The slots an execution with these (unsealed) parameters needs, by key.

    ``action.concurrency.attr`` counts executions whose listed parameters have the same
    values; a parameter the execution was not given counts as its own value. Keys are
    hashed: a parameter may be secret or long, and the key is stored."""
    slots = []
    for policy in policies:
        if not policy.enabled or policy.policy_type not in (CONCURRENCY, CONCURRENCY_BY_ATTR):
            continue
        key = policy.ref
        if policy.policy_type == CONCURRENCY_BY_ATTR:
            values = {
                name: parameters[name]
                for name in policy.parameters.get("attributes") or []
                if name in parameters
            }
            canonical = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
            key += ":" + hashlib.sha256(canonical.encode()).hexdigest()
        slots.append(
            Slot(
                key=key,
                threshold=int(policy.parameters["threshold"]),
                on_full=policy.parameters.get("action", "delay"),
                policy=policy.ref,
            )
        )
    return sorted(slots, key=lambda s: s.key)  # a fixed order: locks are taken in it
