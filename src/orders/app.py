"""Composition root: `create_app()` builds the Starlette app and wires every part together.

Serve it with `uvicorn --factory orders.app:create_app`. Building the app reads and validates
the settings and the verification key; the engine, the HTTP client and everything that uses
them are made in the lifespan, once per process, and closed when it ends.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.middleware import Middleware

from orders.adapters.collaborators import HttpKitchen, HttpPayments, make_http_client
from orders.adapters.database import make_engine, ping
from orders.adapters.events import build_workers
from orders.adapters.keys import SqlIdempotencyKeys
from orders.adapters.repository import SqlOrderViews
from orders.adapters.unit_of_work import SqlUnitOfWork
from orders.logs import configure_logging
from orders.service.idempotency import IdempotentRequests, KeyPurger
from orders.service.orders import OrderService
from orders.service.reconciler import Reconciler
from orders.service.status import StatusService
from orders.settings import ConfigurationError, Settings
from orders.web.errors import EXCEPTION_HANDLERS
from orders.web.middleware import BodyLimitMiddleware, RequestContextMiddleware
from orders.web.openapi import build_openapi
from orders.web.pages import make_pages
from orders.web.routes import routes
from orders.web.schemas import create_order_schema
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
    except ConfigurationError as error:
        raise SystemExit(f"orders: {error}") from None

    configure_logging(settings.log_level, settings.log_format)
    create_order = create_order_schema(settings.max_items_per_order)
    cursor_secret = settings.page_cursor_key or settings.database_url
    pages = make_pages(
        settings.page_size, settings.page_size_max, cursor_secret.get_secret_value().encode()
    )
    openapi_document = to_json(build_openapi(create_order, pages.query, settings.page_size))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        engine = make_engine(settings)
        client = make_http_client(settings, transport)
        keys: KeySource = static_keys or JwksKeys(
            client,
            str(settings.jwt_jwks_url),
            cache_seconds=settings.jwks_cache_seconds,
            min_refresh_seconds=settings.jwks_min_refresh_seconds,
            max_bytes=settings.jwks_max_bytes,
            fetch_timeout=settings.jwks_fetch_timeout_seconds,
        )
        views = SqlOrderViews(engine)
        service = OrderService(
            partial(SqlUnitOfWork, engine),
            views,
            HttpPayments(client, str(settings.payments_url), settings.http_call_deadline),
            HttpKitchen(client, str(settings.kitchen_url), settings.http_call_deadline),
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
        )
        # Order events: the outbox relay and the status consumer run here, beside the API,
        # when BROKER_URL is set (see orders.adapters.events).
        events = build_workers(
            engine,
            StatusService(partial(SqlUnitOfWork, engine)),
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
        logger.info("orders service starting")
        try:
            yield {
                "orders": service,
                "verifier": TokenVerifier.from_settings(settings, keys),
                "create_order_schema": create_order,
                "pages": pages,
                "idempotent_requests": idempotent_requests,
                "database_ready": partial(ping, engine, READY_TIMEOUT_SECONDS),
                "events": events,
            }
        finally:
            await events.stop()
            await reconciler.stop()
            await key_purger.stop()
            await client.aclose()
            await engine.dispose()
            # Whatever was frozen can be collected again (it matters where apps come and go,
            # as in tests).
            gc.unfreeze()
            logger.info("orders service stopped: connections closed")

    return Starlette(
        routes=routes(openapi_document),
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
