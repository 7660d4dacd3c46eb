"""What tracing needs of the OpenTelemetry SDK: the tracer provider with its exporter and
instrumentations, and the server span of each request. Imported only when tracing is on (see
`orders.observability.tracing`), so that a service without it carries none of it.
"""

from __future__ import annotations

from importlib import metadata
from typing import Final

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from orders.logs import trace_id
from orders.observability.middleware import ResponseStatus, route_template

DEFAULT_SERVICE_NAME: Final = "orders"


def _resource() -> Resource:
    try:
        version = metadata.version("orders")
    except metadata.PackageNotFoundError:
        version = "unknown"
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; given attributes
    # would override them, so the default name is only filled in where they set none.
    resource = Resource.create({SERVICE_VERSION: version})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


class Tracing:
    """The tracer provider of one app: `start()` in the lifespan, `stop()` at its end."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self.provider = TracerProvider(resource=_resource())
        self.tracer: Tracer = self.provider.get_tracer("orders")
        self._asyncpg = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]

    @classmethod
    def with_exporter(cls, name: str) -> Tracing:
        """Tracing to the `console` or over OTLP (`otlp`), the rest read from OTEL_*."""
        return cls(ConsoleSpanExporter() if name == "console" else OTLPSpanExporter())

    def start(self, client: httpx.AsyncClient) -> None:
        """Export spans from now on; trace the SQL statements and `client`'s calls."""
        self.provider.add_span_processor(BatchSpanProcessor(self._exporter))
        # asyncpg is patched for the whole process; one app per process serves, and stop()
        # restores it.
        self._asyncpg.instrument(tracer_provider=self.provider)
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def middleware(self) -> Middleware:
        """The server span of every request, as the app installs it."""
        return Middleware(TracingMiddleware, tracer=self.tracer)

    def stop(self) -> None:
        """Stop tracing SQL and send the spans still waiting (the client is closed apart)."""
        self._asyncpg.uninstrument()
        self.provider.shutdown()


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
        status = ResponseStatus(send)
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
                await self.app(scope, receive, status)
            finally:
                template = route_template(scope)
                if template is not None:
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status.code)
                if status.code >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                trace_id.reset(token)
