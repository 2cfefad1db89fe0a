"""Packs: StackStorm-layout folders of actions, rules and webhook settings (pure core).

The loader reads the files it is given and builds plain metadata; it never runs an action.
Runner parameter declarations come from the runner registry (``engine.runners`` by default).
"""

from __future__ import annotations

from engine.packs.action import RETRY_NEVER, RETRY_ONCE, Action, RunnerCatalog
from engine.packs.loader import load_packs
from engine.packs.pack import Pack, PackSet, WebhookSpec
from engine.packs.parameters import MISSING, ActionParameter

__all__ = [
    "MISSING",
    "RETRY_NEVER",
    "RETRY_ONCE",
    "Action",
    "ActionParameter",
    "Pack",
    "PackSet",
    "RunnerCatalog",
    "WebhookSpec",
    "load_packs",
]
