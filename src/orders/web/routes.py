"""The route table: one route per path of the table of operations (an `HTTPEndpoint` with a
handler per method, behind authentication unless the operation is public), and the routes of
the OpenAPI document and its docs page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from orders.web.auth import BearerTokenBackend, unauthorized
from orders.web.openapi import DOCS_ASSETS_PATH, DOCS_PATH, OPENAPI_PATH, docs, openapi_endpoint
from orders.web.operations import OPERATIONS, Operation

_AUTHENTICATED: Final = [
    Middleware(AuthenticationMiddleware, backend=BearerTokenBackend(), on_error=unauthorized)
]


def _route(path: str, operations: Sequence[Operation]) -> Route:
    """The route of one path. Its methods are given to the Route as well, so that a wrong
    method is a 405 (with `Allow`, HEAD wherever GET is) before any token is asked for.
    Authentication wraps each route rather than a catch-all mount, so unknown paths stay 404
    and wrong methods 405 everywhere."""
    name = operations[0].operation_id
    handlers = {
        operation.method.lower(): staticmethod(operation.endpoint) for operation in operations
    }
    endpoint = type(f"{name[0].upper()}{name[1:]}Endpoint", (HTTPEndpoint,), handlers)
    public = {operation.public for operation in operations}
    if len(public) != 1:
        raise ValueError(f"{path}: every method of a path is public, or none is")
    return Route(
        path,
        endpoint,
        methods=[operation.method for operation in operations],
        name=name,
        middleware=None if public == {True} else _AUTHENTICATED,
    )


def api_routes() -> list[BaseRoute]:
    """The routes of every operation in the table."""
    by_path: dict[str, list[Operation]] = {}
    for operation in OPERATIONS:
        by_path.setdefault(operation.path, []).append(operation)
    return [_route(path, operations) for path, operations in by_path.items()]


def routes(openapi_document: bytes) -> list[BaseRoute]:
    return [
        *api_routes(),
        Route(OPENAPI_PATH, openapi_endpoint(openapi_document), methods=["GET"], name="openapi"),
        Route(DOCS_PATH, docs, methods=["GET"], name="docs"),
        Mount(DOCS_ASSETS_PATH, StaticFiles(directory=str(swagger_ui_path)), name="docs_assets"),
    ]
