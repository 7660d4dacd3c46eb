"""The route table: open routes (health, docs) and the order routes behind authentication."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from orders.web import endpoints
from orders.web.auth import BearerTokenBackend, unauthorized
from orders.web.idempotency import idempotent
from orders.web.openapi import DOCS_ASSETS_PATH, DOCS_PATH, OPENAPI_PATH, docs, openapi_endpoint

Endpoint = Callable[[Request], Awaitable[Response]]


def _by_method(**by_method: Endpoint) -> Endpoint:
    """One endpoint per path, so that a 405 lists every method the path serves in `Allow`."""

    async def endpoint(request: Request) -> Response:
        # Starlette serves HEAD wherever GET is served.
        method = "GET" if request.method == "HEAD" else request.method
        return await by_method[method](request)

    return endpoint


def _authenticated(path: str, name: str, **by_method: Endpoint) -> Route:
    """A route that needs a verified bearer token. Authentication wraps each route rather than
    a catch-all mount, so unknown paths stay 404 and wrong methods 405 everywhere."""
    return Route(
        path,
        _by_method(**by_method),
        methods=list(by_method),
        name=name,
        middleware=[
            Middleware(
                AuthenticationMiddleware, backend=BearerTokenBackend(), on_error=unauthorized
            )
        ],
    )


def order_routes() -> list[BaseRoute]:
    return [
        _authenticated("/orders", "orders", GET=endpoints.list_orders, POST=endpoints.place_order),
        _authenticated(
            "/orders/{order_id}",
            "order",
            GET=endpoints.get_order,
            PUT=endpoints.update_order,
            DELETE=endpoints.delete_order,
        ),
        _authenticated("/orders/{order_id}/pay", "pay", POST=idempotent(endpoints.pay_order)),
        _authenticated(
            "/orders/{order_id}/cancel", "cancel", POST=idempotent(endpoints.cancel_order)
        ),
    ]


def routes(openapi_document: bytes) -> list[BaseRoute]:
    return [
        Route("/health/live", endpoints.live, methods=["GET"], name="live"),
        Route("/health/ready", endpoints.ready, methods=["GET"], name="ready"),
        Route(OPENAPI_PATH, openapi_endpoint(openapi_document), methods=["GET"], name="openapi"),
        Route(DOCS_PATH, docs, methods=["GET"], name="docs"),
        Mount(DOCS_ASSETS_PATH, StaticFiles(directory=str(swagger_ui_path)), name="docs_assets"),
        *order_routes(),
    ]
