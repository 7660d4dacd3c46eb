"""The route table: open routes (health, docs) and the order routes behind authentication."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from orders.web import endpoints
from orders.web.auth import BearerTokenBackend, unauthorized
from orders.web.openapi import DOCS_ASSETS_PATH, DOCS_PATH, OPENAPI_PATH, docs, openapi_endpoint


def order_routes() -> list[BaseRoute]:
    return [
        Route("/orders", endpoints.list_orders, methods=["GET"], name="orders"),
        Route("/orders", endpoints.place_order, methods=["POST"], name="place_order"),
        Route("/orders/{order_id}", endpoints.get_order, methods=["GET"], name="order"),
        Route("/orders/{order_id}", endpoints.update_order, methods=["PUT"], name="update_order"),
        Route(
            "/orders/{order_id}", endpoints.delete_order, methods=["DELETE"], name="delete_order"
        ),
        Route("/orders/{order_id}/pay", endpoints.pay_order, methods=["POST"], name="pay"),
        Route("/orders/{order_id}/cancel", endpoints.cancel_order, methods=["POST"], name="cancel"),
    ]


def routes(openapi_document: bytes) -> list[BaseRoute]:
    return [
        Route("/health/live", endpoints.live, methods=["GET"], name="live"),
        Route("/health/ready", endpoints.ready, methods=["GET"], name="ready"),
        Route(OPENAPI_PATH, openapi_endpoint(openapi_document), methods=["GET"], name="openapi"),
        Route(DOCS_PATH, docs, methods=["GET"], name="docs"),
        Mount(DOCS_ASSETS_PATH, StaticFiles(directory=str(swagger_ui_path)), name="docs_assets"),
        # Everything else needs a verified bearer token.
        Mount(
            "",
            routes=order_routes(),
            middleware=[
                Middleware(
                    AuthenticationMiddleware, backend=BearerTokenBackend(), on_error=unauthorized
                )
            ],
        ),
    ]
