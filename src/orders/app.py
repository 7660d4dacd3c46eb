"""Composition root: `create_app()` builds the Starlette app and wires every part together.

Serve it with `uvicorn --factory orders.app:create_app`. Building the app reads and validates
the settings and the verification key; the engine, the HTTP client and everything that uses
them are made in the lifespan, once per process, and closed when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.middleware import Middleware

from orders.adapters.collaborators import HttpKitchen, HttpPayments, make_http_client
from orders.adapters.database import make_engine
from orders.adapters.events import EventCounts, EventWorkers, build_workers
from orders.adapters.keys import SqlIdempotencyKeys
from orders.adapters.repository import SqlOrderViews
from orders.adapters.schema import SchemaHistory, schema_lag
from orders.adapters.unit_of_work import SqlUnitOfWork
from orders.domain import OrderEvent
from orders.logs import configure_logging
from orders.observability.metrics import Metrics
from orders.observability.middleware import RequestMetricsMiddleware
from orders.observability.pool import instrument_engine, measured_pool_class
from orders.observability.server import start_metrics_server
from orders.observability.tracing import TracingConfigurationError, tracing_from_environment
from orders.service.idempotency import IdempotentRequests, KeyPurger
from orders.service.orders import OrderService
from orders.service.ports import PendingCount
from orders.service.reconciler import Reconciler
from orders.service.status import StatusService
from orders.settings import ConfigurationError, Settings
from orders.web.context import Context
from orders.web.errors import EXCEPTION_HANDLERS
from orders.web.middleware import BodyLimitMiddleware, RequestContextMiddleware
from orders.web.openapi import build_openapi
from orders.web.pages import make_pages
from orders.web.routes import routes
from orders.web.schemas import new_order_schema
from orders.web.tokens import JwksKeys, KeySource, StaticKeys, TokenVerifier

logger = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 2.0


def _static_keys(settings: Settings) -> StaticKeys | None:
    setting = "JWT_PUBLIC_KEY"
    if settings.jwt_public_key is not None:
        pem = settings.jwt_public_key.get_secret_value()
    elif settings.jwt_public_key_file is not None:
        try:
            pem = Path(settings.jwt_public_key_file).read_text()
        except OSError as error:
            raise ConfigurationError(
                f"invalid configuration: JWT_PUBLIC_KEY_FILE: cannot read "
                f"{settings.jwt_public_key_file} ({error.strerror})"
            ) from None
        setting = "JWT_PUBLIC_KEY_FILE"
    else:
        return None
    return StaticKeys(pem, settings.jwt_algorithms, setting=setting)


def _report_events(metrics: Metrics, events: Sequence[OrderEvent]) -> None:
    metrics.order_events(event.type for event in events)


def _report_pending(metrics: Metrics, counts: Sequence[PendingCount]) -> None:
    now = datetime.now(UTC)
    for pending in counts:
        age = (now - pending.oldest).total_seconds() if pending.oldest is not None else 0.0
        metrics.pending_outcomes(pending.pending.value, pending.count, age)


async def _watch(events: EventWorkers, metrics: Metrics, interval: float) -> None:
    """Every `interval`: sample this worker's gauges (for the scrapes other workers answer),
    and export what the relay and the consumer did, and the outbox lag."""
    seen = EventCounts()
    while True:
        metrics.sample()
        now = replace(events.counts)
        metrics.event_counts(
            published=now.published - seen.published,
            # A consumed message was either applied or a duplicate of one that was.
            applied=(now.consumed - now.duplicates) - (seen.consumed - seen.duplicates),
            duplicate=now.duplicates - seen.duplicates,
            retried=now.retried - seen.retried,
            dead_lettered=now.dead_lettered - seen.dead_lettered,
        )
        seen = now
        try:
            lag = await events.lag()
        except Exception as error:
            logger.debug("outbox lag not counted (%s)", error)
        else:
            metrics.outbox(lag.waiting, lag.age(datetime.now(UTC)))
        await asyncio.sleep(interval)


def _schema_history(settings: Settings) -> SchemaHistory:
    try:
        return SchemaHistory.from_alembic(settings.alembic_config)
    except OSError as error:
        raise ConfigurationError(
            f"invalid configuration: ALEMBIC_CONFIG: cannot read the migrations ({error})"
        ) from None


def create_app(
    settings: Settings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """Build the app. `transport` replaces the network for outgoing HTTP (tests, demos).

    A missing or invalid setting stops the process with one line naming it.
    """
    try:
        settings = settings if settings is not None else Settings.load()
        static_keys = _static_keys(settings)
        tracing = tracing_from_environment(os.environ)
        history = _schema_history(settings)
    except (ConfigurationError, TracingConfigurationError) as error:
        raise SystemExit(f"orders: {error}") from None

    configure_logging(settings.log_level, settings.log_format)
    new_order = new_order_schema(settings.max_items_per_order)
    cursor_secret = settings.page_cursor_key or settings.database_url
    pages = make_pages(
        settings.page_size, settings.page_size_max, cursor_secret.get_secret_value().encode()
    )
    openapi_document = to_json(build_openapi(new_order, pages.query, settings.page_size))
    metrics = Metrics(commit=settings.build_commit)
    pool_capacity = settings.db_pool_size + settings.db_max_overflow
    # With metrics off nothing is measured: no pool events, no observers on the hot paths.
    observed = settings.metrics_port is not None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Context]]:
        metrics_server = None
        release_engine = None
        if settings.metrics_port is not None:
            metrics_server = await start_metrics_server(
                metrics, settings.metrics_host, settings.metrics_port
            )
            engine = make_engine(
                settings, poolclass=measured_pool_class(metrics, settings.db_max_overflow)
            )
            release_engine = instrument_engine(engine, metrics, pool_capacity)
        else:
            engine = make_engine(settings)
        on_call = metrics.collaborator_call if observed else None
        client = make_http_client(settings, transport)
        if tracing is not None:
            tracing.start(client)
        keys: KeySource = static_keys or JwksKeys(
            client,
            str(settings.jwt_jwks_url),
            cache_seconds=settings.jwks_cache_seconds,
            min_refresh_seconds=settings.jwks_min_refresh_seconds,
            max_bytes=settings.jwks_max_bytes,
            fetch_timeout=settings.jwks_fetch_timeout_seconds,
        )
        views = SqlOrderViews(engine)
        unit_of_work = partial(
            SqlUnitOfWork,
            engine,
            on_committed=partial(_report_events, metrics) if observed else None,
        )
        service = OrderService(
            unit_of_work,
            views,
            HttpPayments(
                client,
                str(settings.payments_url),
                settings.http_call_deadline,
                on_call=on_call,
            ),
            HttpKitchen(
                client,
                str(settings.kitchen_url),
                settings.http_call_deadline,
                on_call=on_call,
            ),
            lease=timedelta(seconds=settings.action_lease_seconds),
            retry_base=timedelta(seconds=settings.reconcile_interval_seconds),
            retry_max=timedelta(seconds=settings.reconcile_retry_max_seconds),
            key_ttl=timedelta(seconds=settings.idempotency_key_ttl_seconds),
        )
        idempotent_requests = IdempotentRequests(
            SqlIdempotencyKeys(engine),
            ttl=timedelta(seconds=settings.idempotency_key_ttl_seconds),
            lease=timedelta(seconds=settings.action_lease_seconds),
        )
        key_purger = KeyPurger(
            idempotent_requests, interval=settings.idempotency_purge_interval_seconds
        )
        reconciler = Reconciler(
            service,
            views,
            interval=settings.reconcile_interval_seconds,
            batch_size=settings.reconcile_batch_size,
            on_pending=partial(_report_pending, metrics) if observed else None,
        )
        # Order events: the outbox relay and the status consumer run here, beside the API,
        # when BROKER_URL is set (see orders.adapters.events).
        events = build_workers(
            engine,
            StatusService(unit_of_work),
            settings,
            relay=True,
            consumer=True,
        )
        # Everything made so far lives as long as the process: keep it out of the cyclic
        # garbage collector's full passes, which otherwise stall requests for milliseconds.
        gc.collect()
        gc.freeze()
        if settings.reconcile_enabled:
            reconciler.start()
        events.start()
        key_purger.start()
        watching = None
        if settings.metrics_port is not None:
            watching = asyncio.create_task(
                _watch(events, metrics, settings.reconcile_interval_seconds)
            )
        logger.info("orders service starting")
        try:
            yield Context(
                orders=service,
                verifier=TokenVerifier.from_settings(settings, keys),
                new_order=new_order,
                pages=pages,
                idempotent_requests=idempotent_requests,
                # The revision is read on every probe, in the query a bare ping would
                # make anyway: no extra round trip, and a restored or downgraded database
                # is noticed at once rather than after a cache expires.
                database_ready=partial(schema_lag, engine, history, READY_TIMEOUT_SECONDS),
            ).as_state()
        finally:
            if watching is not None:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
            await events.stop()
            await reconciler.stop()
            await key_purger.stop()
            if metrics_server is not None:
                await metrics_server.stop()
            await client.aclose()
            await engine.dispose()
            if release_engine is not None:
                release_engine()
            if tracing is not None:
                tracing.stop()
            # Whatever was frozen can be collected again (it matters where apps come and go,
            # as in tests).
            gc.unfreeze()
            logger.info("orders service stopped: connections closed")

    # Outermost, so that they see the status the client got and the span is current while
    # the request's log line is written; when off, they are not in the stack at all.
    observing = []
    if tracing is not None:
        observing.append(tracing.middleware())
    if settings.metrics_port is not None:
        observing.append(Middleware(RequestMetricsMiddleware, metrics=metrics))

    return Starlette(
        routes=routes(openapi_document),
        middleware=[
            *observing,
            Middleware(RequestContextMiddleware),
            Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
