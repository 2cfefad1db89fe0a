"""What a running Hookyard process holds: settings, the store, the current rule set.

The rule set is replaced as a whole (reload builds a new one), so readers always see a
consistent set without locks.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import Settings
from engine.errors import EngineError
from engine.rules import RuleSet, load_rules
from engine.store.base import Store

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    store: Store
    ruleset: RuleSet = field(default_factory=RuleSet)
    load_errors: list[EngineError] = field(default_factory=list)
    # Set while the process drains on SIGTERM: readiness turns false, nothing new is claimed.
    draining: bool = False
    # Background role tasks by role name; a finished task means the role died.
    tasks: dict[str, asyncio.Task] = field(default_factory=dict)

    def worker_problems(self) -> list[str]:
        return [f"role {name} is not running" for name, task in self.tasks.items() if task.done()]

    def load_rules(self) -> None:
        """(Re)load every rules directory; bad files are reported and skipped."""
        dirs = [self.settings.resolve_path(d) for d in self.settings.rules_dirs]
        existing = [d for d in dirs if Path(d).exists()]
        ruleset, errors = load_rules(*existing)
        for error in errors:
            log.error("rule not loaded: %s", error)
        self.ruleset = ruleset
        self.load_errors = list(errors)
        log.info(
            "loaded %d rule(s), %d named webhook(s), %d error(s)",
            len(ruleset),
            len(ruleset.webhooks),
            len(errors),
        )

    @property
    def known_trigger_types(self) -> set[str]:
        """Trigger types a generic /webhooks/st2 post may name: those rules listen to."""
        return {rule.trigger_type for rule in self.ruleset}
