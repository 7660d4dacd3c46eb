"""Pure ASGI middleware: request metrics, and a server span per request when tracing is on.

Both sit outside the request-context middleware, so they see the status the client got
(including the 500 or 503 that one answers for a failed request), and the span is current
while the request's log line is written.
"""

from __future__ import annotations

import time

from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orders.logs import trace_id
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
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.request(
                route_template(scope) or UNMATCHED_ROUTE,
                scope["method"],
                status,
                time.perf_counter() - started,
            )


class TracingMiddleware:
    """A server span per request, continuing the caller's trace (`traceparent`), named by
    method and route template; its trace id goes into the request's log lines."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        method = scope["method"]
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            method,
            context=extract(carrier),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
            },
        ) as span:
            token = trace_id.set(format(span.get_span_context().trace_id, "032x"))
            try:
                await self.app(scope, receive, send_status)
            finally:
                template = route_template(scope)
                if template is not None:
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                trace_id.reset(token)
