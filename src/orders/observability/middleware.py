"""Pure ASGI middleware: request metrics by route template (the server span of each request,
when tracing is on, is `orders.observability.otel.TracingMiddleware`).

Both sit outside the request-context middleware, so they see the status the client got
(including the 500 or 503 that one answers for a failed request), and the span is current
while the request's log line is written.
"""

from __future__ import annotations

import time

from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orders.observability.metrics import UNMATCHED_ROUTE, Metrics


def route_template(scope: Scope) -> str | None:
    """The template of the route that served the request (`/orders/{order_id}`), or None when
    no route matched (the router records the route it picked in the scope)."""
    route = scope.get("route")
    if isinstance(route, Route):
        return route.path
    if isinstance(route, Mount):
        return route.path + "/{path}"
    return None


class ResponseStatus:
    """A `send` that notes the status the app answers with: 500 until the response starts
    (an app that fails before it does is answered 500 by an outer layer)."""

    __slots__ = ("_send", "code")

    def __init__(self, send: Send) -> None:
        self.code = 500
        self._send = send

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.code = message["status"]
        await self._send(message)


class RequestMetricsMiddleware:
    """Counts each request by route template, method and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = ResponseStatus(send)
        try:
            await self.app(scope, receive, status)
        finally:
            self.metrics.request(
                route_template(scope) or UNMATCHED_ROUTE,
                scope["method"],
                status.code,
                time.perf_counter() - started,
            )
