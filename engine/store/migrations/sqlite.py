"""SQLite schema. Version lives in PRAGMA user_version; timestamps are fixed-width UTC text
(see engine.store.codec.time_to_text) so text order is time order; JSON is text."""

from __future__ import annotations

_INITIAL = (
    """
    CREATE TABLE trigger_instances (
        id TEXT PRIMARY KEY,
        trigger TEXT NOT NULL,
        payload TEXT NOT NULL,
        occurrence_time TEXT NOT NULL,
        status TEXT NOT NULL,
        webhook TEXT,
        dedupe_key TEXT UNIQUE,
        lease_token TEXT,
        lease_expires_at TEXT,
        updated_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX trigger_instances_status_id ON trigger_instances (status, id)",
    # Claims walk only the rows still in flight, in id order (see sqlite.py INDEXED BY).
    """
    CREATE INDEX trigger_instances_active ON trigger_instances (id)
    WHERE status IN ('pending', 'processing')
    """,
    "CREATE INDEX trigger_instances_time ON trigger_instances (occurrence_time)",
    "CREATE INDEX trigger_instances_trigger_time ON trigger_instances (trigger, occurrence_time)",
    "CREATE INDEX trigger_instances_webhook_time ON trigger_instances (webhook, occurrence_time)",
    """
    CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        action TEXT NOT NULL,
        parameters TEXT NOT NULL,
        status TEXT NOT NULL,
        result TEXT,
        context TEXT NOT NULL,
        trigger_instance_id TEXT,
        rule_ref TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        attempt INTEGER NOT NULL DEFAULT 1,
        log TEXT NOT NULL,
        lease_token TEXT,
        lease_expires_at TEXT,
        updated_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX executions_status_id ON executions (status, id)",
    """
    CREATE INDEX executions_active ON executions (id)
    WHERE status IN ('requested', 'scheduled', 'running')
    """,
    "CREATE INDEX executions_time ON executions (created_at)",
    "CREATE INDEX executions_action_time ON executions (action, created_at)",
    "CREATE INDEX executions_instance ON executions (trigger_instance_id)",
    "CREATE INDEX executions_rule_time ON executions (rule_ref, created_at)",
    """
    CREATE TABLE enforcements (
        id TEXT PRIMARY KEY,
        trigger_instance_id TEXT NOT NULL REFERENCES trigger_instances (id),
        rule_ref TEXT NOT NULL,
        rule_id TEXT,
        status TEXT NOT NULL,
        failure_reason TEXT,
        execution_id TEXT REFERENCES executions (id),
        enforced_at TEXT NOT NULL,
        trace TEXT NOT NULL
    )
    """,
    "CREATE INDEX enforcements_time ON enforcements (enforced_at)",
    "CREATE INDEX enforcements_instance ON enforcements (trigger_instance_id)",
    "CREATE INDEX enforcements_rule_time ON enforcements (rule_ref, enforced_at)",
    "CREATE INDEX enforcements_execution ON enforcements (execution_id)",
    """
    CREATE TABLE once_per_keys (
        rule_ref TEXT NOT NULL,
        key TEXT NOT NULL,
        trigger_instance_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (rule_ref, key)
    ) WITHOUT ROWID
    """,
)

# Version 2: API keys. Only the SHA-256 of a key is kept; `prefix` finds it.
_API_KEYS = (
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL UNIQUE,
        key_hash TEXT NOT NULL,
        admin INTEGER NOT NULL DEFAULT 0,
        webhooks TEXT NOT NULL,
        triggers TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        enabled INTEGER NOT NULL DEFAULT 1
    )
    """,
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_INITIAL, _API_KEYS)

# Version N (outbound webhooks): subscriptions to engine events, the events (an outbox
# written in the transaction that causes them) and one delivery per event and
# subscription. A claimed delivery's next_attempt_at is its lease expiry, so one index
# finds both due and abandoned deliveries.
_OUTBOUND = (
    """
    CREATE TABLE subscriptions (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        custom_headers TEXT NOT NULL,
        events TEXT NOT NULL,
        secrets TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        enabled INTEGER NOT NULL DEFAULT 1,
        signing_scheme TEXT NOT NULL,
        signing_options TEXT NOT NULL,
        created_at TEXT NOT NULL,
        failing_since TEXT,
        disabled_reason TEXT,
        next_sequence INTEGER NOT NULL DEFAULT 1
    )
    """,
    """
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        ts TEXT NOT NULL,
        data TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        subscription_id TEXT NOT NULL,
        event_id TEXT NOT NULL REFERENCES events (id),
        event_type TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        next_attempt_at TEXT,
        last_status_code INTEGER,
        last_error TEXT,
        last_response_ms REAL,
        last_response_excerpt TEXT,
        attempt_log TEXT NOT NULL DEFAULT '[]',
        redelivery_of TEXT,
        redelivered_as TEXT,
        lease_token TEXT
    )
    """,
    """
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at)
    WHERE status IN ('pending', 'delivering')
    """,
    "CREATE INDEX deliveries_time ON deliveries (created_at)",
    "CREATE INDEX deliveries_subscription_time ON deliveries (subscription_id, created_at)",
    "CREATE INDEX deliveries_event ON deliveries (event_id)",
)
MIGRATIONS = (*MIGRATIONS, _OUTBOUND)

# Version N (explain): per trigger instance, the evaluation trace of every candidate rule,
# written with its enforcements (engine.store.ops.decisions).
_RULE_EVALUATIONS = (
    """
    CREATE TABLE rule_evaluations (
        trigger_instance_id TEXT PRIMARY KEY REFERENCES trigger_instances (id),
        evaluations TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    )
    """,
)
MIGRATIONS = (*MIGRATIONS, _RULE_EVALUATIONS)

# Version N (datastore): st2kv key-value pairs (engine.store.ops.kv). `user_name` is ''
# in the system scope so the primary key has no NULL; a secret's `value` is ciphertext.
_KV_PAIRS = (
    """
    CREATE TABLE kv_pairs (
        scope TEXT NOT NULL,
        user_name TEXT NOT NULL,
        name TEXT NOT NULL,
        id TEXT NOT NULL UNIQUE,
        value TEXT NOT NULL,
        secret INTEGER NOT NULL DEFAULT 0,
        expire_timestamp TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (scope, user_name, name)
    )
    """,
    """
    CREATE INDEX kv_pairs_expiry ON kv_pairs (expire_timestamp)
    WHERE expire_timestamp IS NOT NULL
    """,
)
MIGRATIONS = (*MIGRATIONS, _KV_PAIRS)

# Version N (rules API): rules created through /api/v1/rules (engine.store.ops.rules); the
# definition is the rule as StackStorm's API shapes it. `rules_version` holds one counter,
# bumped by every write, that processes poll to pick up other processes' changes.
_STORED_RULES = (
    """
    CREATE TABLE rules (
        ref TEXT PRIMARY KEY,
        definition TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE rules_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
    )
    """,
    "INSERT INTO rules_version (id, version) VALUES (1, 0)",
)
MIGRATIONS = (*MIGRATIONS, _STORED_RULES)

# Version N (claim limit): how many times each trigger instance was claimed. A claim that
# ends without a recorded decision (its worker died) counts; a released claim does not. An
# instance claimed more than workers.rules_max_claims times is not evaluated again: it is
# what killed the workers (engine.workers.rules).
_INSTANCE_CLAIMS = ("ALTER TABLE trigger_instances ADD COLUMN claims INTEGER NOT NULL DEFAULT 0",)
MIGRATIONS = (*MIGRATIONS, _INSTANCE_CLAIMS)

# Version N (action processes): the OS process an execution's current attempt runs in
# (host, boot id, pid = process group, start time, and the worker that started it), so a
# worker re-claiming it after a crash can kill what is left (engine.workers.leftovers).
_EXECUTION_PROCESS = ("ALTER TABLE executions ADD COLUMN process TEXT",)
MIGRATIONS = (*MIGRATIONS, _EXECUTION_PROCESS)

# Version N (roles): what each API key may do (engine.model.roles). Admin keys stay admin; keys
# limited to webhooks or triggers are posting keys (`webhook`); every other key — which
# could run a shell on the host through core.local before — becomes a read-only
# `observer` until an admin grants it more (`role_migrated` marks them: serve names
# them at start-up until a role is set). `admin` is kept, in step with the role, for
# processes of the previous version.
_API_KEY_ROLES = (
    "ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'observer'",
    "ALTER TABLE api_keys ADD COLUMN grants TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE api_keys ADD COLUMN role_migrated INTEGER NOT NULL DEFAULT 0",
    """
    UPDATE api_keys SET role = CASE
        WHEN webhooks <> '[]' OR triggers <> '[]' THEN 'webhook'
        WHEN admin <> 0 THEN 'admin'
        ELSE 'observer' END
    """,
    "UPDATE api_keys SET role_migrated = 1 WHERE role = 'observer'",
)
MIGRATIONS = (*MIGRATIONS, _API_KEY_ROLES)

# Version N (claimers): the processes that claim work from this store, so that one starting
# after a crash takes over the dead one's leases at once instead of waiting for them to
# expire (engine.store.ops.claimers).
_CLAIMERS = (
    """
    CREATE TABLE claimers (
        id TEXT PRIMARY KEY,
        host TEXT,
        boot_id TEXT,
        pid_namespace INTEGER,
        pid INTEGER,
        pid_start INTEGER,
        started_at TEXT NOT NULL
    )
    """,
)
MIGRATIONS = (*MIGRATIONS, _CLAIMERS)

# Version N (workflows): a task run of a workflow is a child execution (`parent_id`);
# `step_applied` marks a finished child whose result a workflow step has consumed, so no
# result is applied twice. `workflow_runs` holds one Orquesta run per workflow execution:
# the conductor's state (JSON, written and read whole), a version that each step checks
# and bumps, `due` (a child finished since the last step: set in the child's finishing
# transaction) and the lease of the worker applying a step.
_WORKFLOWS = (
    "ALTER TABLE executions ADD COLUMN parent_id TEXT",
    "ALTER TABLE executions ADD COLUMN step_applied INTEGER NOT NULL DEFAULT 0",
    # A task's `delay`: the execution is not claimed before this time.
    "ALTER TABLE executions ADD COLUMN run_after TEXT",
    "CREATE INDEX executions_parent ON executions (parent_id, created_at)",
    """
    CREATE TABLE workflow_runs (
        execution_id TEXT PRIMARY KEY REFERENCES executions (id),
        state TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        due INTEGER NOT NULL DEFAULT 0,
        lease_token TEXT,
        lease_expires_at TEXT,
        updated_at TEXT NOT NULL
    )
    """,
    # Claims walk only the runs with work or a lease (a finished run has neither).
    """
    CREATE INDEX workflow_runs_active ON workflow_runs (execution_id)
    WHERE due = 1 OR lease_token IS NOT NULL
    """,
)
MIGRATIONS = (*MIGRATIONS, _WORKFLOWS)

# Version N (circuit breaker): per subscription, failed attempts in a row and, while its
# circuit is tripped, until when nothing is sent (engine.outbound.breaker); and a rate
# limit of deliveries per second.
_CIRCUIT_BREAKER = (
    "ALTER TABLE subscriptions ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE subscriptions ADD COLUMN circuit_open_until TEXT",
    "ALTER TABLE subscriptions ADD COLUMN rate_limit REAL NOT NULL DEFAULT 0",
)
MIGRATIONS = (*MIGRATIONS, _CIRCUIT_BREAKER)

# Version N (policies): the concurrency slots and the retries of action policies
# (engine.store.ops.policies, policy_retries).
# A slot counts while its execution is active, so it frees itself when the execution ends.
_POLICY_SLOTS = (
    """
    CREATE TABLE execution_slots (
        slot_key TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        taken_at TEXT NOT NULL,
        PRIMARY KEY (slot_key, execution_id)
    )
    """,
    "CREATE INDEX execution_slots_execution ON execution_slots (execution_id)",
    # action.retry: a row per retry pending, written before the execution's end is
    # recorded and deleted with the retry's creation (engine.store.ops.policy_retries), so
    # a killed worker's retry is not lost.
    """
    CREATE TABLE execution_retries (
        original_id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX execution_retries_created ON execution_retries (created_at)",
)
MIGRATIONS = (*MIGRATIONS, _POLICY_SLOTS)

# Version N (rate limits): an API key's request rate, and the token buckets shared by the
# processes of one store (engine.store.ops.rate_buckets).
_RATE_LIMITS = (
    "ALTER TABLE api_keys ADD COLUMN rate_limit REAL NOT NULL DEFAULT 0",
    "ALTER TABLE api_keys ADD COLUMN rate_burst REAL NOT NULL DEFAULT 0",
    """
    CREATE TABLE rate_buckets (
        key TEXT PRIMARY KEY,
        tokens REAL NOT NULL,
        updated_at TEXT NOT NULL
    )
    """,
)
MIGRATIONS = (*MIGRATIONS, _RATE_LIMITS)

# Version N (inquiries): a `core.ask` execution waiting for a response (StackStorm's
# inquiry is the execution itself; its result holds the schema). This row marks it one,
# says when it times out (its ttl; none for a ttl of 0) and who answered it.
_INQUIRIES = (
    """
    CREATE TABLE inquiries (
        execution_id TEXT PRIMARY KEY REFERENCES executions (id),
        expires_at TEXT,
        created_at TEXT NOT NULL,
        responded_by TEXT,
        responded_at TEXT
    )
    """,
    "CREATE INDEX inquiries_created ON inquiries (created_at)",
    "CREATE INDEX inquiries_expiry ON inquiries (expires_at) WHERE expires_at IS NOT NULL",
)
MIGRATIONS = (*MIGRATIONS, _INQUIRIES)


# Version N (stream): the change feed behind /api/v1/stream (engine.model.stream), written
# in the transaction of each change and trimmed to stream.keep_events; the live output of
# running actions (GET /api/v1/executions/<id>/output), kept with its execution.
_STREAM = (
    """
    CREATE TABLE stream_feed (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        object_id TEXT NOT NULL,
        status TEXT,
        data TEXT,
        created_at TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE execution_output (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        execution_id TEXT NOT NULL,
        output_type TEXT NOT NULL,
        data TEXT NOT NULL,
        timestamp TEXT NOT NULL
    )
    """,
    "CREATE INDEX execution_output_execution ON execution_output (execution_id, id)",
)
MIGRATIONS = (*MIGRATIONS, _STREAM)
