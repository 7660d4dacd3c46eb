"""The reconciler: completes in the background what requests left unfinished.

Each worker process runs one. Every interval it takes the orders that are due (a pending
charge, schedule or refund whose time to try again has come, or a claim whose holder is gone)
and completes them with the same idempotency keys (see `OrderService.resolve_due`); row locks
taken with SKIP LOCKED share the work among any number of workers and replicas. When idle, a
pass is one indexed query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from orders.service.background import BackgroundLoop
from orders.service.orders import OrderService
from orders.service.ports import OrderViews, PendingCount

logger = logging.getLogger(__name__)


class Reconciler(BackgroundLoop):
    """`start()` in the lifespan's start-up, `await stop()` in its shutdown.

    `on_pending`, when given, hears the pending outcomes after every pass (for metrics).
    """

    name = "reconciler"

    def __init__(
        self,
        service: OrderService,
        views: OrderViews,
        *,
        interval: float,
        batch_size: int,
        on_pending: Callable[[Sequence[PendingCount]], None] | None = None,
    ) -> None:
        super().__init__()
        self._service = service
        self._views = views
        self._interval = interval
        self._batch_size = batch_size
        self._on_pending = on_pending

    async def run_once(self) -> int:
        """One pass: complete a batch at a time until nothing is due; return how many
        orders were taken."""
        taken = 0
        while not self._stopping.is_set():
            batch = await self._service.resolve_due(self._batch_size)
            taken += batch
            if batch < self._batch_size:
                break
        if self._on_pending is not None:
            self._on_pending(await self._views.pending())
        return taken

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception as error:
                # A database outage, say: try again next time, never die.
                logger.warning("reconciler pass failed (%s: %s)", type(error).__name__, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
