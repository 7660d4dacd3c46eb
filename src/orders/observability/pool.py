"""Database metrics: the pool's capacity, connections in use, waits and timeouts, and failed
statements by SQLSTATE class.

In use is read from the pool when the metrics are sampled (before every scrape, and every
few seconds), not counted at each checkout and checkin. A wait is a checkout that found no
idle connection and no room to open one; SQLAlchemy has no event for it, so the pool class
itself measures it (`measured_pool_class`), at no cost to a checkout that does not wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolProxiedConnection

from orders.observability.metrics import Metrics


def measured_pool_class(metrics: Metrics, max_overflow: int) -> type[AsyncAdaptedQueuePool]:
    """The asyncio queue pool, timing the checkouts that must wait for a connection.

    `max_overflow` is the engine's own (the pool does not expose it).
    """

    class MeasuredPool(AsyncAdaptedQueuePool):
        # SQLAlchemy names a pool's logger after its class's module: keep it among
        # SQLAlchemy's loggers (quiet by default), not under the service's `orders` logger.
        __module__ = AsyncAdaptedQueuePool.__module__

        def connect(self) -> PoolProxiedConnection:
            # Opened connections are size() + overflow(); no idle one and no room: it waits.
            if self.checkedin() > 0 or self.overflow() < max_overflow:
                return super().connect()
            started = time.perf_counter()
            try:
                return super().connect()
            except PoolTimeout:
                metrics.pool_timeouts.inc()
                raise
            finally:
                metrics.pool_waits.observe(time.perf_counter() - started)

    return MeasuredPool


def _sqlstate(error: BaseException | None) -> str | None:
    # asyncpg's errors carry it; SQLAlchemy's adapted driver errors keep it on the original.
    while error is not None:
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str):
            return state
        error = error.__cause__
    return None


def instrument_engine(engine: AsyncEngine, metrics: Metrics, capacity: int) -> Callable[[], None]:
    """Report the connections in use and the failed statements of `engine`'s pool of
    `capacity`; returns what undoes it, once the engine is disposed."""
    metrics.pool_capacity.inc(capacity)
    pool = engine.sync_engine.pool

    def in_use() -> None:
        metrics.pool_in_use.set(pool.checkedout())  # type: ignore[attr-defined]

    def failed(context: ExceptionContext) -> None:
        metrics.statement_error(
            _sqlstate(context.original_exception), disconnect=context.is_disconnect
        )

    stop_sampling = metrics.sample_with(in_use)
    event.listen(engine.sync_engine, "handle_error", failed)

    def release() -> None:
        event.remove(engine.sync_engine, "handle_error", failed)
        stop_sampling()
        metrics.pool_capacity.dec(capacity)
        metrics.pool_in_use.set(0)

    return release
