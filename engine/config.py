"""Settings: one frozen object built once from config.yaml plus HOOKYARD_* variables.

The environment is a parameter (tests pass their own mapping). Nested keys are reached
with a double underscore: ``HOOKYARD_INGEST__MAX_BODY=2097152`` sets ``ingest.max_body``;
``HOOKYARD_STORE__URL`` sets ``store.url``. Values are parsed as YAML scalars, so
``HOOKYARD_SERVER__PORT=9000`` is an int and ``HOOKYARD_RULES_DIRS=[a, b]`` a list.
Unknown keys are errors that name the key and the file.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import ConfigError, YamlLimitError
from engine.support import safeyaml
from engine.support.durations import duration_seconds

ENV_PREFIX = "HOOKYARD_"
DEFAULT_CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # Seconds SIGTERM waits for in-flight requests and batches before exiting.
    shutdown_grace: float = 10.0
    # Seconds a client has from the first byte of a request's headers to their end; a
    # slower one is disconnected (an idle keep-alive connection is aiohttp's to close).
    header_timeout: float = 10.0
    # The URL clients reach the API at, as workflows see it in ctx(st2).api_url (StackStorm's
    # `api_url`); empty: http://<host>:<port>/api/v1. Set it behind a proxy or a load balancer.
    api_url: str = ""

    def public_api_url(self) -> str:
        if self.api_url:
            return self.api_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/api/v1"


@dataclass(frozen=True)
class StoreSettings:
    url: str = "sqlite:///data/hookyard.db"
    # Group commit: the SQLite writer takes up to batch_max queued writes per transaction.
    batch_max: int = 512
    # SQLite busy_timeout and the bound a request waits for its batch before a 503.
    busy_timeout: float = 5.0
    # PostgreSQL connection pool size per process.
    pool_size: int = 10


@dataclass(frozen=True)
class IngestSettings:
    # Largest accepted request body, in bytes (413 above it).
    max_body: int = 1024 * 1024
    # Pending trigger instances above which ingest answers 503 with Retry-After.
    max_backlog: int = 100_000
    retry_after: int = 5
    # Most request headers accepted (431 above it).
    max_headers: int = 100
    # Most fields an application/x-www-form-urlencoded body may have (413 above it).
    max_form_fields: int = 1000
    # Webhooks are stored by a child process (engine.ingest.writer), so that the
    # store's work runs on another core than the HTTP loop's; false: in this process.
    writer_process: bool = True


@dataclass(frozen=True)
class WorkerSettings:
    # How long a claim is valid; an expired lease is re-claimed by any worker.
    lease_seconds: float = 30.0
    # Trigger instances claimed per rules-worker batch.
    rules_batch: int = 200
    # Share of the process's time the rules worker takes while webhooks are arriving in
    # the same process faster than it decides them (more than rules_batch waiting); it
    # grows with the backlog, to all of it at ingest.max_backlog (engine.ingest.pressure).
    # 1 = never yield to ingest.
    rules_share_while_ingesting: float = 0.05
    # A trigger instance claimed this many times without its decision being recorded (its
    # worker died each time, e.g. a rule crashed the process) is marked processing_failed
    # instead of being evaluated again.
    rules_max_claims: int = 5
    # Rules are evaluated (criteria matched, action parameters rendered) in child
    # processes (engine.workers.evaluator), never on the HTTP loop: this many.
    rules_eval_processes: int = 1
    # Seconds the evaluation of one trigger instance may take; past it the evaluator
    # process is killed and replaced, and the instance ends processing_failed.
    rules_eval_timeout: float = 5.0
    # Address space of each evaluator process, MiB (0: unlimited); an evaluation that
    # needs more fails (MemoryError) instead of exhausting the machine.
    rules_eval_memory_mb: int = 1024
    # Workflow steps (Orquesta and action-chain conductors: every expression and template
    # a workflow evaluates) run in child processes too (engine.workers.step_pool): this
    # many per process that starts or steps workflows.
    workflow_step_processes: int = 1
    # Seconds one workflow step may take; past it the step process is killed and
    # replaced, and the workflow fails naming the task and expression.
    workflow_step_timeout: float = 5.0
    # Address space of each workflow step process, MiB (0: unlimited).
    workflow_step_memory_mb: int = 1024
    # Fallback polling interval when no wake-up hint arrives.
    poll_interval: float = 0.5
    # Executions one process runs at once.
    actions_concurrency: int = 8
    # Timeout of a run when neither the execution, the action nor the runner sets one.
    default_timeout: float = 600.0
    # Bytes of stdout and of stderr kept per execution (the rest is cut and marked).
    max_output: int = 1024 * 1024
    # A run whose worker died is tried again until this many attempts, then abandoned.
    max_attempts: int = 2
    # Links one action chain runs at most before it fails: StackStorm has no bound, and a
    # chain whose links lead back to themselves would otherwise run forever.
    max_chain_links: int = 1000


@dataclass(frozen=True)
class OutboundSettings:
    # Networks outbound requests (HTTP runner, webhooks) may reach despite the SSRF guard,
    # e.g. ["127.0.0.1/32"] for tests or ["10.0.0.0/8"] for internal deployments.
    allow_private: tuple[str, ...] = ()
    # Delays before each delivery attempt of an event ("0s" = at once; s, m, h, d units);
    # its length is the number of attempts. Default close to Svix's; Identus' "3 attempts
    # 5 s apart" is ["0s", "5s", "5s"]. Checked at start by engine.outbound.policy.
    retry_schedule: tuple[str, ...] = ("0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h")
    # Each delay is scaled by a random factor in [1 - jitter, 1 + jitter].
    retry_jitter: float = 0.1
    # Seconds a receiver has to answer with a 2xx; slower is a failed attempt.
    delivery_timeout: float = 15.0
    # Deliveries one process sends at once, and at most this many to one subscription.
    delivery_concurrency: int = 32
    per_subscription_concurrency: int = 4
    # A subscription whose deliveries only failed for this many seconds is disabled when
    # another delivery is exhausted (0: never). Svix uses 5 days.
    auto_disable_after: float = 432000.0
    # Circuit breaker per subscription (engine.outbound.breaker): after this many failed
    # attempts in a row (0: never) nothing is sent to it for breaker_cooldown seconds —
    # its deliveries wait without spending attempts — then one probe decides.
    breaker_threshold: int = 10
    breaker_cooldown: float = 60.0
    # Seconds the old secret keeps signing next to the new one after rotate-secret.
    secret_rotation_grace: float = 86400.0
    # Bytes of a receiver's response body kept on the delivery record.
    response_excerpt: int = 1024
    # The RSA key ring for rsa-sha256 signatures (JWKS at /.well-known/jwks.json):
    # generated on first use, encrypted with the passphrase when one is set.
    keyring_dir: str = "data/keys"
    keyring_passphrase: str | None = None
    # A PEM private key file to sign with instead of the generated key ring (rotate by
    # configuring another file; keyring_passphrase decrypts it when it is encrypted).
    signing_key_pem: str | None = None
    # Seconds a rotated-out public key stays in the JWKS.
    key_rotation_grace: float = 604800.0
    # A subscription to every event from configuration; set from the environment with
    # HOOKYARD_GLOBAL_WEBHOOK_URL and HOOKYARD_GLOBAL_WEBHOOK_API_KEY (sent as Bearer).
    global_webhook_url: str | None = None
    global_webhook_api_key: str | None = None


@dataclass(frozen=True)
class AuthSettings:
    # False opens every webhook and the API to anyone who can connect (a loud warning).
    enabled: bool = True


@dataclass(frozen=True)
class ExplainSettings:
    # Share of trigger instances that matched nothing whose candidate traces are kept
    # (0..1); traces of instances with a match or an evaluation error are always kept.
    sample_rate: float = 1.0
    # Most candidate-rule traces kept per trigger instance (matches and errors first).
    max_candidates: int = 50


@dataclass(frozen=True)
class TimerSettings:
    # Ticks that fell while no process ran the timers role: fire_once (the latest missed
    # tick fires once on start) or skip (resume with the next future tick).
    missed: str = "fire_once"
    # Longest sleep between two checks of the timer schedule, seconds.
    check_interval: float = 1.0


@dataclass(frozen=True)
class RetentionSettings:
    # How long finished records are kept ("30d", "12h", seconds; null: forever), purged by
    # the retention role in small batches (engine.workers.retention). Work still to be
    # done is never purged.
    # Trigger instances, with their enforcements and explain traces.
    trigger_instances: str | None = "30d"
    # Executions by workflow or action: a workflow goes with every task execution below it.
    executions: str | None = "90d"
    # Outbound deliveries (with their events).
    deliveries: str | None = "30d"
    # A trigger instance holding a dedupe key is kept at least this long, so a sender's
    # retry within it is still answered as a duplicate however short the retention.
    dedupe_window: str = "7d"
    # once_per keys (a rule fired for this object): kept forever unless set; after a purge
    # the rule fires again for an object it saw before.
    once_per_keys: str | None = None
    # Seconds between two purge passes, and records deleted per transaction.
    interval: float = 60.0
    batch: int = 500
    # Seconds between two batches of one pass, so other writers get the store in between.
    pause: float = 0.05


# Kinds with a retention setting, in the order a pass purges them.
RETENTION_KINDS = ("trigger_instances", "executions", "deliveries", "once_per_keys")


@dataclass(frozen=True)
class DatastoreSettings:
    # Fernet key(s) for secret datastore values; several comma-separated to rotate (the
    # first encrypts, all decrypt). Empty: the first secret generates one into key_file.
    encryption_key: str = ""
    key_file: str = "data/datastore.key"
    # Seconds a worker reuses one loaded copy of the datastore for st2kv in templates.
    cache_seconds: float = 1.0


@dataclass(frozen=True)
class RuleSettings:
    # How many times a chain of rules on the generic triggers (a rule on
    # core.st2.generic.actiontrigger whose action finishes and fires it again) may re-fire
    # before its enforcement fails instead of requesting another execution.
    max_trigger_depth: int = 10


@dataclass(frozen=True)
class PacksSettings:
    # A `core` pack in packs_dirs replaces the built-in one (engine/packs/builtin/core)
    # instead of being refused at load.
    override_core: bool = False
    # Per-pack virtualenvs, <virtualenvs_dir>/<pack> (`hookyard pack setup-virtualenv`),
    # relative to the config file's folder: beside the default SQLite store's data/.
    virtualenvs_dir: str = "data/virtualenvs"


@dataclass(frozen=True)
class StreamSettings:
    # Server-Sent Events clients of /api/v1/stream (and /stream/v1) held at once by one
    # process; one more is answered 503.
    max_clients: int = 500
    # Events waiting for one client; a client this far behind is dropped with a final
    # event naming the last id it got (it resumes with Last-Event-ID).
    client_queue: int = 1000
    # Seconds between keep-alive comments on an idle stream.
    heartbeat: float = 15.0
    # Seconds one write to a client may block before the client counts as gone.
    write_timeout: float = 10.0
    # Longest wait between two reads of the change feed (a wake-up hint usually comes
    # first: LISTEN/NOTIFY on PostgreSQL, this process's own writes on SQLite).
    poll_interval: float = 0.5
    # Seconds the reader waits after a hint before reading, gathering the changes that
    # follow it: fewer, larger writes to each client for that much more latency.
    batch_seconds: float = 0.02
    # Feed entries kept for resuming with Last-Event-ID; older ones are trimmed.
    keep_events: int = 100_000


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"
    format: str = "text"  # text | json


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    datastore: DatastoreSettings = field(default_factory=DatastoreSettings)
    explain: ExplainSettings = field(default_factory=ExplainSettings)
    timers: TimerSettings = field(default_factory=TimerSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    rules: RuleSettings = field(default_factory=RuleSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    # Per-webhook settings by hook name (auth, signature, jwt, apikey, dedupe, max_body,
    # response), checked at start by engine.http.hookdefs.
    webhooks: dict[str, Any] = field(default_factory=dict)
    rules_dirs: tuple[str, ...] = ("rules",)
    # Packs besides the built-in core pack, which is always loaded.
    packs_dirs: tuple[str, ...] = ("packs",)
    packs: PacksSettings = field(default_factory=PacksSettings)
    # Pack configs, one <pack ref>.yaml each (StackStorm's /opt/stackstorm/configs).
    configs_dir: str = "configs"
    roles: tuple[str, ...] = (
        "api",
        "rules",
        "actions",
        "deliveries",
        "timers",
        "workflows",
        "sensors",
        "retention",
    )
    # Directory relative paths in the file are resolved against (the config file's folder).
    base_dir: str = "."
    # The file these settings came from (None: defaults only), for file:line in errors.
    config_file: str | None = field(default=None, compare=False)

    def resolve_path(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def replace(self, **changes: Any) -> Settings:
        """A copy with top-level or dotted changes: ``replace(**{"store.url": "..."})``."""
        data = dataclasses.asdict(self)
        for dotted, value in changes.items():
            _set_dotted(data, dotted.split("."), value, source="override")
        return _build(Settings, data, "override", ())


# Roles grow as the workers land (deliveries, timers next).
KNOWN_ROLES = (
    "api",
    "rules",
    "actions",
    "deliveries",
    "timers",
    "workflows",
    "sensors",
    "retention",
)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from a YAML file (optional) and an environment mapping."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = "<defaults>"
    base_dir = "."
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read config file: {exc.strerror}") from exc
        try:
            loaded = safeyaml.safe_load(text, file=source)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
        except YamlLimitError as exc:
            raise ConfigError(str(exc)) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: top level must be a mapping of settings")
        data = loaded
        base_dir = str(Path(path).resolve().parent)
    data = dict(data)
    data.setdefault("base_dir", base_dir)
    if path is not None:
        data.setdefault("config_file", str(Path(path).resolve()))
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NON_SETTING_VARS:
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        _set_dotted(data, keys, _parse_env_value(raw), source=f"environment variable {name}")
    for name, key in _GLOBAL_WEBHOOK_VARS.items():
        # Documented names outside the SECTION__KEY pattern; the raw text, not YAML.
        if environ.get(name):
            _set_dotted(data, ["outbound", key], environ[name], source=f"environment {name}")
    settings = _build(Settings, data, source, ())
    validate_roles(settings.roles, f"{source}: roles")
    retention_seconds(settings.retention, source)
    if settings.timers.missed not in ("fire_once", "skip"):
        raise ConfigError(
            f"{source}: timers.missed: {settings.timers.missed!r} is not a policy; "
            "use fire_once or skip"
        )
    return settings


def retention_seconds(retention: RetentionSettings, source: str) -> dict[str, float | None]:
    """Each kind's retention in seconds (None: kept forever), plus the dedupe window;
    ConfigError naming the setting when one is not a positive duration."""
    seconds: dict[str, float | None] = {}
    for kind in (*RETENTION_KINDS, "dedupe_window"):
        value = getattr(retention, kind)
        if value is None:
            seconds[kind] = None
            continue
        try:
            seconds[kind] = duration_seconds(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: retention.{kind}: {exc}") from None
        if not seconds[kind] and kind != "dedupe_window":
            raise ConfigError(
                f"{source}: retention.{kind}: 0 would purge records as they finish;"
                " use null to keep them forever"
            )
    return seconds


def validate_roles(roles: tuple[str, ...], where: str) -> None:
    unknown = [r for r in roles if r not in KNOWN_ROLES]
    if unknown:
        raise ConfigError(
            f"{where}: unknown role {unknown[0]!r}; known roles: {', '.join(KNOWN_ROLES)}"
        )
    if not roles:
        raise ConfigError(f"{where}: at least one role is needed")


# Variables with the prefix that are not settings (read by tests, CLI clients...).
_NON_SETTING_VARS = frozenset(
    {
        "HOOKYARD_TEST_PG",
        "HOOKYARD_URL",
        "HOOKYARD_API_KEY",
        "HOOKYARD_CONFIG",
        "HOOKYARD_GLOBAL_WEBHOOK_URL",
        "HOOKYARD_GLOBAL_WEBHOOK_API_KEY",
    }
)
_GLOBAL_WEBHOOK_VARS = {
    "HOOKYARD_GLOBAL_WEBHOOK_URL": "global_webhook_url",
    "HOOKYARD_GLOBAL_WEBHOOK_API_KEY": "global_webhook_api_key",
}


def _parse_env_value(raw: str) -> Any:
    try:
        return safeyaml.safe_load(raw) if raw.strip() else raw
    except (yaml.YAMLError, YamlLimitError):
        return raw


def _set_dotted(data: dict[str, Any], keys: list[str], value: Any, *, source: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(keys)}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def _build(cls: type, data: Any, source: str, path: tuple[str, ...]) -> Any:
    where = ".".join(path) or "top level"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: {'.'.join((*path, unknown[0]))}: unknown setting; "
            f"known here: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, source, (*path, name))
    return cls(**kwargs)


# Sizes and waits that mean nothing at zero or below (a zero busy_timeout would refuse
# every write; a zero batch or pool could hold nothing).
_POSITIVE = {
    ("server", "header_timeout"),
    ("store", "busy_timeout"),
    ("store", "batch_max"),
    ("store", "pool_size"),
    ("ingest", "max_body"),
    ("ingest", "max_form_fields"),
    ("workers", "rules_share_while_ingesting"),
    ("workers", "rules_max_claims"),
    ("workers", "rules_eval_processes"),
    ("workers", "rules_eval_timeout"),
    ("retention", "interval"),
    ("retention", "batch"),
    ("workers", "workflow_step_processes"),
    ("workers", "workflow_step_timeout"),
    ("stream", "max_clients"),
    ("stream", "client_queue"),
    ("stream", "heartbeat"),
    ("stream", "write_timeout"),
    ("stream", "poll_interval"),
    ("stream", "keep_events"),
}


def _coerce(hint: Any, value: Any, source: str, path: tuple[str, ...]) -> Any:
    where = ".".join(path)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, path)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: {where}: expected a list")
        return tuple(str(v) for v in value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {where}: expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {where}: expected a number, got {value!r}")
        if hint is int and not float(value).is_integer():
            raise ConfigError(f"{source}: {where}: expected a whole number, got {value!r}")
        if path in _POSITIVE and value <= 0:
            raise ConfigError(f"{source}: {where}: must be greater than 0, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{source}: {where}: expected a string, got {value!r}")
        return str(value)
    return value
