"""PostgreSQL schema. Version rows live in hookyard_schema_version; JSON is jsonb (trigger
instance payloads: json, see _PAYLOAD_JSON), timestamps are timestamptz."""

from __future__ import annotations

_INITIAL = (
    """
    CREATE TABLE trigger_instances (
        id text PRIMARY KEY,
        trigger text NOT NULL,
        payload jsonb NOT NULL,
        occurrence_time timestamptz NOT NULL,
        status text NOT NULL,
        webhook text,
        dedupe_key text UNIQUE,
        lease_token text,
        lease_expires_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX trigger_instances_status_id ON trigger_instances (status, id)",
    # Claims walk only the rows still in flight, in id order.
    """
    CREATE INDEX trigger_instances_active ON trigger_instances (id)
    WHERE status IN ('pending', 'processing')
    """,
    "CREATE INDEX trigger_instances_time ON trigger_instances (occurrence_time)",
    "CREATE INDEX trigger_instances_trigger_time ON trigger_instances (trigger, occurrence_time)",
    "CREATE INDEX trigger_instances_webhook_time ON trigger_instances (webhook, occurrence_time)",
    """
    CREATE TABLE executions (
        id text PRIMARY KEY,
        action text NOT NULL,
        parameters jsonb NOT NULL,
        status text NOT NULL,
        result jsonb,
        context jsonb NOT NULL,
        trigger_instance_id text,
        rule_ref text,
        created_at timestamptz NOT NULL,
        started_at timestamptz,
        finished_at timestamptz,
        attempt integer NOT NULL DEFAULT 1,
        log jsonb NOT NULL,
        lease_token text,
        lease_expires_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now()
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
        id text PRIMARY KEY,
        trigger_instance_id text NOT NULL REFERENCES trigger_instances (id),
        rule_ref text NOT NULL,
        rule_id text,
        status text NOT NULL,
        failure_reason text,
        execution_id text REFERENCES executions (id),
        enforced_at timestamptz NOT NULL,
        trace jsonb NOT NULL
    )
    """,
    "CREATE INDEX enforcements_time ON enforcements (enforced_at)",
    "CREATE INDEX enforcements_instance ON enforcements (trigger_instance_id)",
    "CREATE INDEX enforcements_rule_time ON enforcements (rule_ref, enforced_at)",
    "CREATE INDEX enforcements_execution ON enforcements (execution_id)",
    """
    CREATE TABLE once_per_keys (
        rule_ref text NOT NULL,
        key text NOT NULL,
        trigger_instance_id text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (rule_ref, key)
    )
    """,
)

# Version 2: API keys. Only the SHA-256 of a key is kept; `prefix` finds it.
_API_KEYS = (
    """
    CREATE TABLE api_keys (
        id text PRIMARY KEY,
        name text NOT NULL,
        prefix text NOT NULL UNIQUE,
        key_hash text NOT NULL,
        admin boolean NOT NULL DEFAULT false,
        webhooks jsonb NOT NULL,
        triggers jsonb NOT NULL,
        created_at timestamptz NOT NULL,
        expires_at timestamptz,
        enabled boolean NOT NULL DEFAULT true
    )
    """,
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_INITIAL, _API_KEYS)

# Version N (outbound webhooks): subscriptions to engine events, the events (an outbox
# written in the transaction that causes them) and one delivery per event and
# subscription. A claimed delivery's next_attempt_at is its lease expiry, so one index
# finds both due and abandoned deliveries. Event data is text: sent verbatim.
_OUTBOUND = (
    """
    CREATE TABLE subscriptions (
        id text PRIMARY KEY,
        url text NOT NULL,
        custom_headers text NOT NULL,
        events text NOT NULL,
        secrets text NOT NULL,
        description text NOT NULL DEFAULT '',
        enabled boolean NOT NULL DEFAULT true,
        signing_scheme text NOT NULL,
        signing_options text NOT NULL,
        created_at timestamptz NOT NULL,
        failing_since timestamptz,
        disabled_reason text,
        next_sequence bigint NOT NULL DEFAULT 1
    )
    """,
    """
    CREATE TABLE events (
        id text PRIMARY KEY,
        type text NOT NULL,
        ts timestamptz NOT NULL,
        data text NOT NULL
    )
    """,
    """
    CREATE TABLE deliveries (
        id text PRIMARY KEY,
        subscription_id text NOT NULL,
        event_id text NOT NULL REFERENCES events (id),
        event_type text NOT NULL,
        sequence bigint NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL,
        next_attempt_at timestamptz,
        last_status_code integer,
        last_error text,
        last_response_ms double precision,
        last_response_excerpt text,
        attempt_log text NOT NULL DEFAULT '[]',
        redelivery_of text,
        redelivered_as text,
        lease_token text
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
        trigger_instance_id text PRIMARY KEY REFERENCES trigger_instances (id),
        evaluations jsonb NOT NULL,
        recorded_at timestamptz NOT NULL
    )
    """,
)
MIGRATIONS = (*MIGRATIONS, _RULE_EVALUATIONS)

# Version N (datastore): st2kv key-value pairs (engine.store.ops.kv). `user_name` is ''
# in the system scope so the primary key has no NULL; a secret's `value` is ciphertext.
_KV_PAIRS = (
    """
    CREATE TABLE kv_pairs (
        scope text NOT NULL,
        user_name text NOT NULL,
        name text NOT NULL,
        id text NOT NULL UNIQUE,
        value text NOT NULL,
        secret boolean NOT NULL DEFAULT false,
        expire_timestamp timestamptz,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
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
        ref text PRIMARY KEY,
        definition jsonb NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    )
    """,
    """
    CREATE TABLE rules_version (
        id integer PRIMARY KEY CHECK (id = 1),
        version bigint NOT NULL
    )
    """,
    "INSERT INTO rules_version (id, version) VALUES (1, 0)",
)
MIGRATIONS = (*MIGRATIONS, _STORED_RULES)

# Version N (claim limit): how many times each trigger instance was claimed. A claim that
# ends without a recorded decision (its worker died) counts; a released claim does not. An
# instance claimed more than workers.rules_max_claims times is not evaluated again: it is
# what killed the workers (engine.workers.rules).
_INSTANCE_CLAIMS = ("ALTER TABLE trigger_instances ADD COLUMN claims integer NOT NULL DEFAULT 0",)
MIGRATIONS = (*MIGRATIONS, _INSTANCE_CLAIMS)

# Version N (payload json): a trigger instance's payload is json, not jsonb. It is only
# ever written and read whole (never queried inside), and jsonb's conversion was a fifth
# of the server's work per webhook; it now reads back as it was sent, as on SQLite.
# Processes of the previous version keep working against the migrated table (their
# `::jsonb` insert is assigned to json), so processes can be upgraded one at a time. The
# ALTER rewrites the table once, holding its lock meanwhile: on a large table, ingest on
# every process waits for it.
_PAYLOAD_JSON = (
    "ALTER TABLE trigger_instances ALTER COLUMN payload TYPE json USING payload::json",
)
MIGRATIONS = (*MIGRATIONS, _PAYLOAD_JSON)

# Version N (action processes): the OS process an execution's current attempt runs in
# (host, boot id, pid = process group, start time, and the worker that started it), so a
# worker re-claiming it after a crash can kill what is left (engine.workers.leftovers).
# Written and read whole, never queried inside: json, as trigger instance payloads.
_EXECUTION_PROCESS = ("ALTER TABLE executions ADD COLUMN process json",)
MIGRATIONS = (*MIGRATIONS, _EXECUTION_PROCESS)

# Version N (roles): what each API key may do (engine.model.roles). Admin keys stay admin; keys
# limited to webhooks or triggers are posting keys (`webhook`); every other key — which
# could run a shell on the host through core.local before — becomes a read-only
# `observer` until an admin grants it more (`role_migrated` marks them: serve names
# them at start-up until a role is set). `admin` is kept, in step with the role, for
# processes of the previous version.
_API_KEY_ROLES = (
    "ALTER TABLE api_keys ADD COLUMN role text NOT NULL DEFAULT 'observer'",
    "ALTER TABLE api_keys ADD COLUMN grants jsonb NOT NULL DEFAULT '{}'::jsonb",
    "ALTER TABLE api_keys ADD COLUMN role_migrated boolean NOT NULL DEFAULT false",
    """
    UPDATE api_keys SET role = CASE
        WHEN jsonb_array_length(webhooks) > 0 OR jsonb_array_length(triggers) > 0
            THEN 'webhook'
        WHEN admin THEN 'admin'
        ELSE 'observer' END
    """,
    "UPDATE api_keys SET role_migrated = true WHERE role = 'observer'",
)
MIGRATIONS = (*MIGRATIONS, _API_KEY_ROLES)

# Version N (claimers): the processes that claim work from this store, so that one starting
# after a crash takes over the dead one's leases at once instead of waiting for them to
# expire (engine.store.ops.claimers).
_CLAIMERS = (
    """
    CREATE TABLE claimers (
        id text PRIMARY KEY,
        host text,
        boot_id text,
        pid_namespace bigint,
        pid bigint,
        pid_start bigint,
        started_at timestamptz NOT NULL
    )
    """,
)
MIGRATIONS = (*MIGRATIONS, _CLAIMERS)

# Version N (workflows): a task run of a workflow is a child execution (`parent_id`);
# `step_applied` marks a finished child whose result a workflow step has consumed, so no
# result is applied twice. `workflow_runs` holds one Orquesta run per workflow execution:
# the conductor's state (json: written and read whole, never queried inside), a version
# that each step checks and bumps, `due` (a child finished since the last step: set in
# the child's finishing transaction) and the lease of the worker applying a step.
_WORKFLOWS = (
    "ALTER TABLE executions ADD COLUMN parent_id text",
    "ALTER TABLE executions ADD COLUMN step_applied boolean NOT NULL DEFAULT false",
    # A task's `delay`: the execution is not claimed before this time.
    "ALTER TABLE executions ADD COLUMN run_after timestamptz",
    "CREATE INDEX executions_parent ON executions (parent_id, created_at)",
    """
    CREATE TABLE workflow_runs (
        execution_id text PRIMARY KEY REFERENCES executions (id),
        state json NOT NULL,
        version bigint NOT NULL DEFAULT 1,
        due boolean NOT NULL DEFAULT false,
        lease_token text,
        lease_expires_at timestamptz,
        updated_at timestamptz NOT NULL
    )
    """,
    # Claims walk only the runs with work or a lease (a finished run has neither).
    """
    CREATE INDEX workflow_runs_active ON workflow_runs (execution_id)
    WHERE due OR lease_token IS NOT NULL
    """,
)
MIGRATIONS = (*MIGRATIONS, _WORKFLOWS)

# Version N (circuit breaker): see the SQLite schema.
_CIRCUIT_BREAKER = (
    "ALTER TABLE subscriptions ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0",
    "ALTER TABLE subscriptions ADD COLUMN circuit_open_until timestamptz",
    "ALTER TABLE subscriptions ADD COLUMN rate_limit double precision NOT NULL DEFAULT 0",
)
MIGRATIONS = (*MIGRATIONS, _CIRCUIT_BREAKER)

# Version N (policies): the concurrency slots and the retries of action policies
# (engine.store.ops.policies, policy_retries).
# A slot counts while its execution is active, so it frees itself when the execution ends.
_POLICY_SLOTS = (
    """
    CREATE TABLE execution_slots (
        slot_key text NOT NULL,
        execution_id text NOT NULL,
        taken_at timestamptz NOT NULL,
        PRIMARY KEY (slot_key, execution_id)
    )
    """,
    "CREATE INDEX execution_slots_execution ON execution_slots (execution_id)",
    # action.retry: a row per retry pending, written before the execution's end is
    # recorded and deleted with the retry's creation (engine.store.ops.policy_retries), so
    # a killed worker's retry is not lost.
    """
    CREATE TABLE execution_retries (
        original_id text PRIMARY KEY,
        created_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX execution_retries_created ON execution_retries (created_at)",
)
MIGRATIONS = (*MIGRATIONS, _POLICY_SLOTS)

# Version N (rate limits): see the SQLite schema.
_RATE_LIMITS = (
    "ALTER TABLE api_keys ADD COLUMN rate_limit double precision NOT NULL DEFAULT 0",
    "ALTER TABLE api_keys ADD COLUMN rate_burst double precision NOT NULL DEFAULT 0",
    """
    CREATE TABLE rate_buckets (
        key text PRIMARY KEY,
        tokens double precision NOT NULL,
        updated_at timestamptz NOT NULL
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
        execution_id text PRIMARY KEY REFERENCES executions (id),
        expires_at timestamptz,
        created_at timestamptz NOT NULL,
        responded_by text,
        responded_at timestamptz
    )
    """,
    "CREATE INDEX inquiries_created ON inquiries (created_at)",
    "CREATE INDEX inquiries_expiry ON inquiries (expires_at) WHERE expires_at IS NOT NULL",
)
MIGRATIONS = (*MIGRATIONS, _INQUIRIES)


# Version N (stream): the change feed behind /api/v1/stream (engine.model.stream), written
# in the transaction of each change and trimmed to stream.keep_events; the live output of
# running actions (GET /api/v1/executions/<id>/output), kept with its execution. `seq` is
# taken at insert, not at commit: the reader waits a moment for a gap to fill.
_STREAM = (
    """
    CREATE TABLE stream_feed (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL,
        object_id text NOT NULL,
        status text,
        data json,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE execution_output (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        execution_id text NOT NULL,
        output_type text NOT NULL,
        data text NOT NULL,
        timestamp timestamptz NOT NULL
    )
    """,
    "CREATE INDEX execution_output_execution ON execution_output (execution_id, id)",
)
MIGRATIONS = (*MIGRATIONS, _STREAM)
