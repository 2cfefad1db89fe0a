"""Keep this process's rule set in step with the rules stored through the API.

A write through this process's API applies at once (the handler calls `refresh` after the
store commits). Other processes sharing the store pick it up by polling the store's
`rules_version` counter every POLL_SECONDS (one cheap read), so on PostgreSQL every
`hookyard serve` sees an API rule change within a few seconds. File and pack rules are
untouched: the rule set is rebuilt from the current file rules plus the stored ones, and
swapped in whole like a reload does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from engine.errors import RuleLoadError, StoreError
from engine.process.runtime import Runtime
from engine.rules import Rule, RuleSet
from engine.rules.rule import rule_id
from engine.rules.stored import build_api_rule, is_api_rule, shown_ref

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


class RuleSync:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.version: int | None = None
        self._lock = asyncio.Lock()

    async def refresh(self, *, force: bool = False) -> bool:
        """Load the stored rules again if their version moved (or `force`); returns
        whether the rule set was rebuilt."""
        async with self._lock:
            store = self.runtime.store
            # Read before listing: a write landing in between moves the version again,
            # so the next poll loads it.
            version = await store.rules_version()
            if version == self.version and not force:
                return False
            stored = await store.list_rules()
            rules: list[Rule] = []
            schemas = self.runtime.packs.trigger_parameter_schemas()
            for record in stored:
                try:
                    rules.append(build_api_rule(record.definition, schemas))
                except RuleLoadError as exc:
                    # Stored rules were valid when written; a newer Hookyard may be stricter.
                    log.error(
                        "stored rule %s (id %s) does not load and is skipped: %s; fix it "
                        "with PUT /api/v1/rules/<id>, or delete it with DELETE "
                        "/api/v1/rules/<id> or `hookyard rule delete <id>`",
                        shown_ref(record.ref),
                        rule_id(record.ref),
                        exc,
                    )
            self.apply(rules)
            self.version = version
            return True

    def apply(self, api_rules: list[Rule]) -> None:
        runtime = self.runtime
        file_rules = [rule for rule in runtime.ruleset if not is_api_rule(rule)]
        ruleset, duplicates = RuleSet.build([*file_rules, *api_rules])
        for error in duplicates:
            log.warning("stored rule not used: %s", error)
        # The swap: two assignments with no await between them (as reload does).
        runtime.api_rules = tuple(api_rules)
        runtime.ruleset = ruleset
        log.info("rules stored through the API: %d in service", len(api_rules))


RULE_SYNC = web.AppKey("rule_sync", RuleSync)


def install(app: web.Application, runtime: Runtime) -> None:
    """Put a RuleSync on the app; it loads stored rules on start and then polls."""
    app[RULE_SYNC] = RuleSync(runtime)
    app.cleanup_ctx.append(_context)


async def _context(app: web.Application) -> AsyncIterator[None]:
    sync = app[RULE_SYNC]
    try:
        await sync.refresh(force=True)
    except StoreError as exc:
        log.error("stored rules not loaded yet (retrying): %s", exc)
    task = asyncio.create_task(_poll(sync), name="hookyard-rule-sync")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _poll(sync: RuleSync) -> None:
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            await sync.refresh()
        except StoreError as exc:
            log.warning("checking for rule changes failed: %s", exc)
        except Exception:  # a bug here must not stop the polling
            log.exception("refreshing stored rules failed")
