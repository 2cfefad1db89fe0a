"""What a store backend supplies per dialect: one operation per store method.

An operation is `op(conn, *args)` from the op modules (engine.store.ops): a plain function
of a sqlite3 connection, or a coroutine of an asyncpg one. engine.store.sqlite and
engine.store.postgres each fill one `Dialect`; engine.store.sql_store.SqlStore calls
them, so a store method is written once for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Op = Callable[..., Any]
# One operation with its arguments after the connection (engine.store.ops.grouped).
Step = tuple[Op, tuple[Any, ...]]


@dataclass(frozen=True)
class Dialect:
    """A backend's operations, each `op(conn, *args)`; the arguments are those of the
    store method of the same name (`now` is this process's clock)."""

    # trigger instances and lists
    count_pending: Op  # (conn) -> int
    claim_trigger_instances: Op  # (conn, limit, lease_seconds, now)
    release_trigger_instances: Op  # (conn, leases, now)
    get_trigger_instance: Op
    list_rows: Op  # (conn, table, conditions, limit, offset) -> Page
    # rule decisions: (written ids or errors, whether executions were requested)
    record_enforcements: Op  # (conn, id, token, outcomes, final_status, now, evaluations)
    record_decisions: Op  # (conn, decisions, now)
    get_rule_evaluations: Op
    queue_stats: Op
    # executions
    create_execution: Op  # (conn, new, now) -> Execution
    claim_executions: Op  # (conn, limit, lease_seconds, max_attempts, now, only_actions)
    start_execution: Op  # (conn, id, token, now)
    heartbeat_execution: Op  # (conn, id, token, lease_seconds, now)
    finish_execution: Op  # (conn, id, token, status, result_json, now)
    run_grouped: Op  # (conn, items): each item a list of Steps; answers or item errors
    get_execution: Op
    request_cancel: Op  # (conn, id, now); cascades down a workflow's children
    record_execution_process: Op
    execution_processes: Op
    # workflow runs
    start_workflow: Op  # (conn, id, token, state_json, children, final_status, result_json, now)
    claim_workflow_steps: Op  # (conn, limit, lease_seconds, now)
    # (conn, id, token, version, state_json, applied, children, final_status, result_json, now)
    apply_workflow_step: Op
    get_workflow_state: Op  # (conn, id) -> the run's stored state, or None
    # claimers: the processes that claim work (engine.store.ops.claimers)
    register_claimer: Op  # (conn, claimer_id, record, now)
    unregister_claimer: Op  # (conn, claimer_id)
    take_over_dead_claims: Op  # (conn, claimer_id, is_dead, now) -> counts
    request_pause: Op  # (conn, id, now) -> (execution, previous status)
    request_resume: Op  # (conn, id, now) -> (execution, previous status)
    # inquiries (engine.store.ops.inquiries)
    open_inquiry: Op  # (conn, id, token, result_json, expires_at, now) -> Execution
    list_inquiries: Op  # (conn, limit, offset) -> Page
    get_inquiry: Op  # (conn, id) -> Execution
    respond_inquiry: Op  # (conn, id, result_json, responder, now) -> Execution
    expire_inquiries: Op  # (conn, now) -> list[Execution]
    # API keys
    create_api_key: Op
    list_api_keys: Op
    find_api_key: Op
    get_api_key: Op
    extend_api_key: Op  # (conn, id, by, now)
    set_api_key_enabled: Op
    set_api_key_role: Op
    delete_api_keys: Op
    set_api_key_rate: Op  # (conn, id, rate, burst) -> ApiKey
    # rate limits shared by processes (engine.store.ops.rate_buckets)
    take_rate_tokens: Op  # (conn, key, rate, burst, want, now) -> (granted, wait)
    # datastore
    put_kv: Op  # (conn, pair, now)
    get_kv: Op  # (conn, name, scope, user, now)
    list_kv: Op  # (conn, prefix, scope, user, now)
    delete_kv: Op  # (conn, name, scope, user, now)
    # stored rules
    create_rule: Op  # (conn, ref, definition, now)
    replace_rule: Op  # (conn, ref, definition, now)
    delete_rule: Op
    list_rules: Op
    rules_version: Op
    # outbound
    insert_subscription: Op
    get_subscription: Op
    list_subscriptions: Op
    update_subscription: Op
    delete_subscription: Op
    put_global_subscription: Op
    claim_deliveries: Op  # (conn, limit, lease_seconds, per_subscription, busy, now)
    complete_delivery: Op
    release_deliveries: Op  # (conn, leases, now)
    get_delivery: Op
    list_deliveries: Op  # (conn, conditions, limit, offset)
    redeliver: Op  # (conn, id, now)
    recover_deliveries: Op  # (conn, subscription_id, since, now)
    # retention (engine.store.ops.retention)
    purge: Op  # (conn, kind, before, dedupe_before, limit, dry_run) -> count
    # action policies (engine.store.ops.policies)
    take_policy_slots: Op  # (conn, id, token, [(key, threshold)], now) -> full key | None
    delay_execution: Op  # (conn, id, token, now) -> Execution
    requeue_delayed: Op  # (conn, action | None, limit, waited_seconds, now) -> int
    mark_retry_pending: Op  # (conn, original_id, now)
    settle_retry: Op  # (conn, original_id, new | None, now) -> bool
    pending_retries: Op  # (conn, limit, waited_seconds, now) -> [Execution]
    # stream (engine.store.ops.stream)
    append_output: Op  # (conn, execution_id, action_ref, runner_ref, chunks, now)
    list_output: Op  # (conn, execution_id, output_type)
    read_feed: Op  # (conn, after, limit) -> [FeedEntry]
    feed_head: Op  # (conn) -> int
    trim_feed: Op  # (conn, keep) -> int
