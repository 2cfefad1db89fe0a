"""The base class of Python actions (runner ``python-script``), as pack authors know it.

A pack's action module defines one class deriving from :class:`Action` and implementing
``run(self, **parameters)``. It returns the result, or ``(ok, result)`` to choose the status
itself. It runs in its own process, so it may block, print, or crash freely.

StackStorm actions written against ``st2common.runners.base_action.Action`` run unchanged:
the Python host makes that import path resolve to this class.
"""

from __future__ import annotations

import logging
from typing import Any


class Action:
    """Derive from this and implement ``run``; ``self.config`` is the pack configuration."""

    def __init__(self, config: dict[str, Any] | None = None, action_service: Any = None) -> None:
        self.config: dict[str, Any] = config if config is not None else {}
        # engine.runners.action_service: the datastore and trigger dispatch, through the
        # engine (None when an action class is built outside a run, as in a unit test).
        self.action_service = action_service
        self.logger: logging.Logger = logging.getLogger(
            f"hookyard.actions.{type(self).__module__}.{type(self).__name__}"
        )

    def run(self, **parameters: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement run(self, **parameters)")
