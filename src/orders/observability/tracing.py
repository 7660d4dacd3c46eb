"""OpenTelemetry traces, configured by the standard `OTEL_*` variables and off unless they ask.

Tracing is on when an exporter is named: `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, or `OTEL_TRACES_EXPORTER` names `otlp` or
`console`; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps it off. The SDK
reads the rest itself: `OTEL_SERVICE_NAME` (default here: `orders`), `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_PROPAGATORS`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_*`
(headers, timeout, certificates). OTLP goes over HTTP/protobuf.

When off, nothing is installed: no middleware, no wrapped driver or client, no thread.
When on, the service traces incoming requests (one server span each), every statement sent
to PostgreSQL (asyncpg's calls, whether SQLAlchemy or the service made them) and every call
to payments and kitchen, passing `traceparent` on.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Final

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Tracer

DEFAULT_SERVICE_NAME: Final = "orders"
_EXPORTERS: Final = frozenset({"otlp", "console"})
_TRUE: Final = frozenset({"1", "true", "yes", "on"})


class TracingConfigurationError(Exception):
    """The OTEL_* variables ask for something this service cannot do; one line."""


def _exporter_name(environ: Mapping[str, str]) -> str | None:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return None
    named = [
        part.strip().lower()
        for part in environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if part.strip()
    ]
    if named:
        if named == ["none"]:
            return None
        if len(named) > 1 or named[0] not in _EXPORTERS:
            raise TracingConfigurationError(
                f"OTEL_TRACES_EXPORTER: {environ['OTEL_TRACES_EXPORTER']!r} is not supported "
                f"(choose one of {', '.join(sorted(_EXPORTERS))}, or none)"
            )
        return named[0]
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return "otlp" if any(environ.get(name, "").strip() for name in endpoints) else None


def _check_protocol(environ: Mapping[str, str]) -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name, "").strip()
        if protocol:
            if protocol != "http/protobuf":
                raise TracingConfigurationError(
                    f"{name}: {protocol!r} is not supported (use http/protobuf)"
                )
            return


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
    def from_environment(cls, environ: Mapping[str, str]) -> Tracing | None:
        """Tracing as the OTEL_* variables in `environ` describe it; None when off.

        Raises TracingConfigurationError for an exporter or protocol it does not support.
        """
        name = _exporter_name(environ)
        if name is None:
            return None
        if name == "console":
            return cls(ConsoleSpanExporter())
        _check_protocol(environ)
        return cls(OTLPSpanExporter())

    def start(self, client: httpx.AsyncClient) -> None:
        """Export spans from now on; trace the SQL statements and `client`'s calls."""
        self.provider.add_span_processor(BatchSpanProcessor(self._exporter))
        # asyncpg is patched for the whole process; one app per process serves, and stop()
        # restores it.
        self._asyncpg.instrument(tracer_provider=self.provider)
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def stop(self) -> None:
        """Stop tracing SQL and send the spans still waiting (the client is closed apart)."""
        self._asyncpg.uninstrument()
        self.provider.shutdown()
