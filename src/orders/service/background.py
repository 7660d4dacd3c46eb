"""Loops that run beside the API in every worker process: the reconciler, the key purger,
the outbox relay and the status consumer."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

# How long shutdown waits for a pass in progress before cancelling it; whatever the pass held
# (claims, leases, locks) is taken over by another worker once it runs out.
STOP_GRACE_SECONDS: Final = 5.0


class BackgroundLoop:
    """`start()` in the lifespan's start-up, `await stop()` in its shutdown. `_run` ends
    once `_stopping` is set; one that does not within the grace period is cancelled."""

    name = "background"

    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"orders-{self.name}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_GRACE_SECONDS)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        raise NotImplementedError
