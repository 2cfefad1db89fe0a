"""The action-policy methods of the store contract (engine.store.base): concurrency slots,
delayed executions and retries, written once over a backend's dialect
(engine.store.ops.policies, policy_retries). A mixin of engine.store.sql_store.SqlStore,
which supplies `_read`, `_write`, `dialect`, `sealer` and `_wake`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.model.records import Execution, NewExecution, utcnow


class SqlPolicies:
    """Slots taken atomically, delayed executions requested again, retries settled once."""

    _read: Any
    _write: Any
    dialect: Any
    sealer: Any
    _wake: Any

    async def take_policy_slots(
        self, execution_id: str, lease_token: str, slots: Sequence[tuple[str, int]]
    ) -> str | None:
        ordered = sorted((str(key), int(threshold)) for key, threshold in slots)
        return await self._write(
            self.dialect.take_policy_slots, execution_id, lease_token, ordered, utcnow()
        )

    async def delay_execution(self, execution_id: str, lease_token: str) -> Execution:
        return await self._write(self.dialect.delay_execution, execution_id, lease_token, utcnow())

    async def requeue_delayed(
        self, action: str | None, limit: int, waited_seconds: float = 0
    ) -> int:
        requeued = await self._write(
            self.dialect.requeue_delayed, action, limit, float(waited_seconds), utcnow()
        )
        if requeued:
            self._wake("executions")
        return requeued

    async def mark_retry_pending(self, original_id: str) -> None:
        await self._write(self.dialect.mark_retry_pending, original_id, utcnow())

    async def settle_retry(self, original_id: str, new: NewExecution | None) -> bool:
        if new is not None:
            new = self.sealer.seal_execution(new)
        settled = await self._write(self.dialect.settle_retry, original_id, new, utcnow())
        if settled and new is not None:
            self._wake("executions")
        return settled

    async def pending_retries(self, limit: int, waited_seconds: float) -> list[Execution]:
        return await self._read(
            self.dialect.pending_retries, limit, float(waited_seconds), utcnow()
        )
