"""Decide what a trigger instance causes: pure, from the rule set and the instance.

For every candidate rule: a matched rule becomes a succeeded enforcement with a requested
execution (parameters rendered), or a failed enforcement when its parameters or once_per
key do not render or its action is unknown; a rule whose criteria could not be evaluated
(type mismatch, pattern render error) becomes a failed enforcement with the reason. Rules
that simply did not match produce no enforcement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.errors import RuleError
from engine.model.generic_triggers import DEPTH_KEY, GENERIC_TRIGGERS, depth_of
from engine.model.records import (
    ENFORCEMENT_FAILED,
    ENFORCEMENT_SUCCEEDED,
    EnforcementOutcome,
    NewExecution,
    TriggerInstance,
)
from engine.rules.index import RuleEvaluation, RuleSet
from engine.rules.render import action_context_for, render_parameters
from engine.rules.rule import Rule

# The user recorded on executions a rule requested (StackStorm records the rule's user).
RULE_USER = "hookyard"
# The steps `decide` reports to its `progress` callback.
CRITERIA = "criteria"
PARAMETERS = "parameters"


def decide(
    ruleset: RuleSet,
    instance: TriggerInstance,
    *,
    kv: Any = None,
    action_known: Callable[[str], bool] | None = None,
    parameter_kinds: Callable[[str], Mapping[str, str]] | None = None,
    progress: Callable[[Rule, str], None] | None = None,
    max_trigger_depth: int | None = None,
) -> tuple[list[EnforcementOutcome], list[RuleEvaluation]]:
    """Enforcement outcomes for `instance`, plus every candidate's evaluation (for explain).

    `action_known(ref)` says whether an action exists; `parameter_kinds(ref)` names the
    parameters of an action that render their own way (shell commands, URLs: quoted).
    `progress(rule, step)` is told each step ("criteria", "parameters") before it starts.
    A generic trigger (engine.model.generic_triggers) deeper than `max_trigger_depth`
    fails its enforcements: a rule re-firing itself through its own action stops there.
    """
    on_rule = None if progress is None else (lambda rule: progress(rule, CRITERIA))
    evaluations = ruleset.evaluate(
        instance.trigger, instance.payload, instance.webhook, kv=kv, on_rule=on_rule
    )
    outcomes = []
    for result in evaluations:
        if progress is not None and result.matched:
            progress(result.rule, PARAMETERS)
        outcome = _outcome(result, instance, kv, action_known, parameter_kinds, max_trigger_depth)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes, evaluations


def _outcome(
    result: RuleEvaluation,
    instance: TriggerInstance,
    kv: Any,
    action_known: Callable[[str], bool] | None,
    parameter_kinds: Callable[[str], Mapping[str, str]] | None,
    max_trigger_depth: int | None = None,
) -> EnforcementOutcome | None:
    rule = result.rule
    trace = result.evaluation.trace_dicts()
    if not result.matched:
        errored = next((c for c in result.evaluation.trace if c.error), None)
        if errored is None:
            return None
        return EnforcementOutcome(
            rule_ref=rule.ref,
            status=ENFORCEMENT_FAILED,
            trace=trace,
            failure_reason=f"criterion {errored.key!r} could not be evaluated: {errored.reason}",
        )

    def failed(reason: str) -> EnforcementOutcome:
        return EnforcementOutcome(
            rule_ref=rule.ref, status=ENFORCEMENT_FAILED, trace=trace, failure_reason=reason
        )

    if action_known is not None and not action_known(rule.action_ref):
        return failed(f"action {rule.action_ref!r} is not registered (is its pack loaded?)")
    try:
        once_per_key = rule.render_once_per_key(instance.payload, kv=kv)
    except RuleError as exc:
        return failed(f"once_per key did not render: {exc}")
    context = action_context_for(rule, instance.id, RULE_USER)
    if instance.trigger in GENERIC_TRIGGERS:
        depth = depth_of(instance.payload)
        if max_trigger_depth is not None and depth > max_trigger_depth:
            return failed(
                f"trigger {instance.trigger} is {depth} executions deep, past "
                f"rules.max_trigger_depth ({max_trigger_depth}): a rule chain re-fires "
                "itself through its own actions; stopped here"
            )
        context[DEPTH_KEY] = depth  # its execution's generic triggers go one deeper
    try:
        parameters = render_parameters(
            rule,
            instance.payload,
            kv=kv,
            action_context=context,
            parameter_kinds=parameter_kinds(rule.action_ref) if parameter_kinds else {},
        )
    except RuleError as exc:
        return failed(f"action parameters did not render: {exc}")
    return EnforcementOutcome(
        rule_ref=rule.ref,
        status=ENFORCEMENT_SUCCEEDED,
        trace=trace,
        execution=NewExecution(action=rule.action_ref, parameters=parameters, context=context),
        once_per_key=once_per_key,
    )
