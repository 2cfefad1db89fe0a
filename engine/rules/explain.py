"""Why a trigger instance did (or did not) fire rules: pure functions over plain records.

The rules worker turns each candidate's evaluation into a small record (`trace_records`)
stored with the instance's enforcements; `explain` later joins those records with the
enforcements and executions that followed into one report. Neither does I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine.model.records import (
    ENFORCEMENT_FAILED,
    WEBHOOK_TRIGGER,
    EnforcementOutcome,
    TriggerInstance,
)
from engine.rules.index import RuleEvaluation, RuleSet
from engine.rules.rule import Rule, normalize_webhook_name


def trace_records(evaluations: Sequence[RuleEvaluation]) -> list[dict[str, Any]]:
    """One JSON-ready record per candidate rule: matched or not, and its criteria trace."""
    return [
        {
            "rule": result.rule.ref,
            "rule_type": result.rule.rule_type,
            "action": result.rule.action_ref,
            "matched": result.matched,
            "reason": result.evaluation.reason,
            "trace": result.evaluation.trace_dicts(),
        }
        for result in evaluations
    ]


def traces_to_keep(
    evaluations: Sequence[RuleEvaluation],
    outcomes: Sequence[EnforcementOutcome],
    *,
    failed: bool,
    sampled: bool,
    max_candidates: int,
) -> list[dict[str, Any]] | None:
    """The records to store for one instance, or None to store none.

    Instances with a match, a failed enforcement or a failed evaluation keep their traces
    always; others only when `sampled`. At most `max_candidates` records are kept,
    matched and failed ones first (they explain what happened).
    """
    important = (
        failed
        or any(r.matched for r in evaluations)
        or any(o.status == ENFORCEMENT_FAILED for o in outcomes)
    )
    if not (important or sampled):
        return None
    records = trace_records(evaluations)
    failed_refs = {o.rule_ref for o in outcomes if o.status == ENFORCEMENT_FAILED}
    records.sort(key=lambda r: 0 if r["matched"] or r["rule"] in failed_refs else 1)
    return records[: max(0, max_candidates)]


def explain(
    instance: TriggerInstance,
    records: Sequence[Mapping[str, Any]] | None,
    enforcements: Iterable[Any],
    executions: Mapping[str, Any],
    ruleset: RuleSet,
    *,
    rule_ref: str | None = None,
) -> dict[str, Any]:
    """The explain report of `instance` (see README "Operating Hookyard").

    `records` are the stored trace records (None: none kept), `enforcements` the stored
    Enforcement rows, `executions` execution id → Execution. `ruleset` (the current rules)
    only feeds hints. With `rule_ref`, only that rule's candidate entry is reported.
    """
    by_rule = {e.rule_ref: e for e in enforcements}
    candidates = []
    for record in records or ():
        if rule_ref is not None and record["rule"] != rule_ref:
            continue
        candidates.append(_candidate(record, by_rule.get(record["rule"]), executions))
    # Enforcements without a stored trace (traces not kept or cut by max_candidates).
    traced = {c["rule"] for c in candidates}
    for ref, enforcement in by_rule.items():
        if ref in traced or (rule_ref is not None and ref != rule_ref):
            continue
        candidates.append(
            _candidate(
                {"rule": ref, "matched": True, "trace": enforcement.trace, "reason": None},
                enforcement,
                executions,
            )
        )
    report: dict[str, Any] = {
        "trigger_instance": {
            "id": instance.id,
            "trigger": instance.trigger,
            "webhook": instance.webhook,
            "status": instance.status,
            "occurrence_time": instance.occurrence_time.isoformat(),
        },
        "traces_kept": records is not None,
        "candidates": candidates,
        "matched": [c["rule"] for c in candidates if c["matched"]],
    }
    if instance.status in ("pending", "processing"):
        report["hint"] = "the rules worker has not processed this trigger instance yet"
    elif rule_ref is not None and not candidates:
        report["hint"] = _rule_hint(instance, ruleset, rule_ref, records is not None)
    elif not candidates and records is not None:
        report["hint"] = no_candidate_hint(instance.trigger, instance.webhook, ruleset)
    elif records is None and not candidates:
        report["hint"] = (
            "no rule matched and its evaluation traces were not kept "
            "(explain.sample_rate); `hookyard rule test RULE --trigger-instance ID` "
            "evaluates a rule against this payload now"
        )
    return report


def _candidate(
    record: Mapping[str, Any], enforcement: Any, executions: Mapping[str, Any]
) -> dict[str, Any]:
    trace = list(record.get("trace") or [])
    first_failure = next((item for item in trace if not item.get("passed")), None)
    entry: dict[str, Any] = {
        "rule": record["rule"],
        "matched": bool(record.get("matched")),
        "trace": trace,
    }
    if record.get("reason"):
        entry["reason"] = record["reason"]
    if not entry["matched"] and first_failure is not None:
        entry["failed_criterion"] = {
            "key": first_failure.get("key"),
            "operator": first_failure.get("operator"),
            "pattern": first_failure.get("pattern"),
            "value": first_failure.get("value"),
            "reason": first_failure.get("reason"),
            "error": bool(first_failure.get("error")),
        }
    if enforcement is not None:
        entry["enforcement"] = {
            "id": enforcement.id,
            "status": enforcement.status,
            "failure_reason": enforcement.failure_reason,
            "execution_id": enforcement.execution_id,
        }
        execution = executions.get(enforcement.execution_id or "")
        if execution is not None:
            entry["execution"] = {
                "id": execution.id,
                "action": execution.action,
                "status": execution.status,
            }
    return entry


def listening_rules(ruleset: RuleSet, trigger: str, webhook: str | None) -> list[Rule]:
    """Every rule (enabled or not) that listens to this trigger (and webhook)."""
    name = normalize_webhook_name(webhook) if webhook else None
    return [
        rule
        for rule in ruleset
        if rule.trigger_type == trigger and (trigger != WEBHOOK_TRIGGER or rule.webhook_url == name)
    ]


def no_candidate_hint(trigger: str, webhook: str | None, ruleset: RuleSet) -> str:
    """Why no rule was a candidate: disabled listeners, or names close to the one used."""
    disabled = [r.ref for r in listening_rules(ruleset, trigger, webhook) if not r.enabled]
    if trigger == WEBHOOK_TRIGGER and webhook is not None:
        what = f"webhook {normalize_webhook_name(webhook)!r}"
        names = sorted(ruleset.webhooks)
    else:
        what = f"trigger type {trigger!r}"
        names = sorted(ruleset.trigger_types)
    hint = f"no enabled rule listens to {what}"
    if disabled:
        hint += f"; disabled rules that would: {', '.join(sorted(disabled))}"
    similar = difflib.get_close_matches(
        normalize_webhook_name(webhook) if webhook and trigger == WEBHOOK_TRIGGER else trigger,
        names,
        n=3,
        cutoff=0.6,
    )
    if similar:
        hint += f"; rules listen to similar names: {', '.join(similar)}"
    elif names and not disabled:
        hint += f"; rules listen to: {', '.join(names[:5])}"
    return hint


def _rule_hint(instance: TriggerInstance, ruleset: RuleSet, rule_ref: str, traced: bool) -> str:
    rule = ruleset.get(rule_ref)
    if rule is None:
        return f"rule {rule_ref!r} is not loaded now"
    if rule.trigger_type != instance.trigger or (
        instance.trigger == WEBHOOK_TRIGGER
        and rule.webhook_url != normalize_webhook_name(instance.webhook or "")
    ):
        listens = rule.trigger_type + (
            f" (webhook {rule.webhook_url!r})" if rule.webhook_url else ""
        )
        return f"rule {rule_ref} listens to {listens}, so it was not a candidate"
    if not traced:
        return f"traces were not kept for this instance; try `hookyard rule test {rule_ref} ...`"
    return f"rule {rule_ref} was not a candidate when this instance was processed (added later?)"
