"""What a running Hookyard process holds: settings, the store, the current rule set.

The rule set is replaced as a whole (reload builds a new one), so readers always see a
consistent set without locks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import Settings
from engine.errors import EngineError
from engine.ingest.pressure import IngestPressure
from engine.ingest.writer import IngestProcess
from engine.outbound.sender import KeyRingProvider
from engine.outbound.ssrf import DestinationGuard
from engine.packs import PackSet, load_packs
from engine.process.ended_triggers import ended_source
from engine.rules import Rule, RuleSet, load_rules
from engine.rules.lint import shell_template_warnings
from engine.rules.parameter_kinds import kinds_for_runner, shell_command_parameters
from engine.rules.trigger_parameters import unfit_trigger_parameters
from engine.runners import RunnerRegistry, default_runners
from engine.secrets.sealing import ParameterSealer
from engine.store.base import Store
from engine.store.datastore import Datastore

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    store: Store
    ruleset: RuleSet = field(default_factory=RuleSet)
    packs: PackSet = field(default_factory=PackSet)
    runners: RunnerRegistry | None = None
    load_errors: list[EngineError] = field(default_factory=list)
    # Rules stored through /api/v1/rules (engine.workers.rule_sync keeps them current);
    # merged after file and pack rules, so a file rule wins a ref both define.
    api_rules: tuple[Rule, ...] = ()
    # Set while the process drains on SIGTERM: readiness turns false, nothing new is claimed.
    draining: bool = False
    # Background role tasks by role name; a finished task means the role died.
    tasks: dict[str, asyncio.Task] = field(default_factory=dict)
    # The api role's ingest writer process (engine.ingest.writer), when webhooks
    # are stored by one; else by `store`.
    ingest_process: IngestProcess | None = None
    # The rules role's evaluator processes (engine.workers.evaluator.EvaluatorPool).
    evaluator: Any = None
    # The sensors role's supervisor (engine.workers.sensors), for the sensors' states.
    sensors: Any = None
    # The workflow step processes (engine.workers.step_pool.StepPool), made on first use.
    workflow_steps: Any = None

    # Callbacks `observer(event, *details)` for what the roles do ("rules_evaluated",
    # "execution_finished", "delivery_finished"...); engine.support.metrics subscribes. An observer
    # must never break the role that reports to it.
    observers: list[Callable[..., None]] = field(default_factory=list)

    def observe(self, event: str, *details: Any) -> None:
        for observer in self.observers:
            try:
                observer(event, *details)
            except Exception:
                log.exception("observer of %s failed", event)

    def worker_problems(self) -> list[str]:
        problems = [
            f"role {name} is not running" for name, task in self.tasks.items() if task.done()
        ]
        if self.ingest_process is not None and (problem := self.ingest_process.problem()):
            problems.append(problem)
        if self.evaluator is not None and (problem := self.evaluator.problem()):
            problems.append(problem)
        return problems

    @property
    def ingest(self) -> Any:
        """Where webhooks are stored: `add_trigger_instance(item)` of the ingest writer
        process or of the store."""
        return self.ingest_process or self.store

    def __post_init__(self) -> None:
        # Secret action parameters are written sealed by whatever creates an execution
        # (rules, the API) and unsealed by the actions worker (engine.secrets.sealing).
        self.sealer = ParameterSealer(self.settings, self.secret_parameters)
        self.store.use_sealer(self.sealer)
        # Ends that no action worker records (a workflow's, a cancel before the run...)
        # fire the generic triggers in their own transaction (engine.process.ended_triggers).
        self.store.use_generic_triggers(ended_source(lambda: (self.ruleset, self.packs)))

        # One key ring per process: runners (core.sendwebhook), deliveries and the JWKS.
        self.keyrings = KeyRingProvider(self.settings)
        # Webhooks in this process come before its rules work (engine.ingest.pressure).
        self.ingest_pressure = IngestPressure(
            self.settings.workers.rules_share_while_ingesting,
            self.settings.ingest.max_backlog,
            keeps_up_below=self.settings.workers.rules_batch,
        )
        if self.runners is None:
            guard = DestinationGuard(self.settings.outbound.allow_private)
            self.runners = default_runners(guard.check_url, guard.connector, self.keyrings.get)

    def load_rules(self) -> None:
        """(Re)load packs and rules directories; bad files are reported and skipped.

        The built-in core pack is always there; a missing folder is no error. Rules come
        from the rules directories and from each pack's rules/ folder.
        """
        pack_dirs = [self.settings.resolve_path(d) for d in self.settings.packs_dirs]
        packs, pack_errors = load_packs(
            [d for d in pack_dirs if d.exists()],
            runners=self.runners,
            configs_dir=self.settings.resolve_path(self.settings.configs_dir),
            override_core=self.settings.packs.override_core,
        )
        dirs = [self.settings.resolve_path(d) for d in self.settings.rules_dirs]
        existing = [d for d in dirs if Path(d).exists()]
        file_ruleset, rule_errors = load_rules(*existing)
        fitting, trigger_errors = unfit_trigger_parameters(
            [*file_ruleset, *packs.rules(), *self.api_rules], packs.trigger_parameter_schemas()
        )
        ruleset, duplicate_errors = RuleSet.build(fitting)
        errors = [*pack_errors, *rule_errors, *trigger_errors, *duplicate_errors]
        for error in errors:
            log.error("not loaded: %s", error)
        self.packs = packs
        self.ruleset = ruleset
        self.load_errors = errors
        for rule in ruleset:  # shell commands whose values would be refused at run time
            for warning in shell_template_warnings(rule, self.shell_parameters):
                log.warning("%s", warning)
        log.info(
            "loaded %d pack(s), %d action(s), %d rule(s), %d named webhook(s), %d error(s)",
            len(packs.packs),
            len(packs.actions()),
            len(ruleset),
            len(ruleset.webhooks),
            len(errors),
        )

    @functools.cached_property
    def datastore(self) -> Datastore:
        """The st2kv datastore on this process's store (one cached view for all roles)."""
        return Datastore(self.store, self.settings)

    def action_known(self, ref: str) -> bool:
        pack_ref, _, name = ref.partition(".")
        pack = self.packs.packs.get(pack_ref)
        return pack is not None and name in pack.actions

    def secret_parameters(self, ref: str) -> frozenset[str]:
        """Parameters of action `ref` declared `secret: true` (none for an unknown action)."""
        if not self.action_known(ref):
            return frozenset()
        return self.packs.action(ref).secret_parameters

    def parameter_kinds(self, ref: str) -> Mapping[str, str]:
        """Parameters of action `ref` that render their own way: shell commands and URLs,
        whose inserted values are quoted (engine.rules.parameter_kinds)."""
        if not self.action_known(ref):
            return kinds_for_runner(None)
        return kinds_for_runner(self.packs.action(ref).runner_type)

    def shell_parameters(self, ref: str) -> frozenset[str]:
        """Parameters of action `ref` that are shell commands (for the load-time lint)."""
        return shell_command_parameters(self.parameter_kinds(ref))

    @property
    def known_trigger_types(self) -> set[str]:
        """Trigger types a generic /webhooks/st2 post may name: those packs register and
        those rules listen to."""
        return {rule.trigger_type for rule in self.ruleset} | {
            t.ref for t in self.packs.trigger_types()
        }
