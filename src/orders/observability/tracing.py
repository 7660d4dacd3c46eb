"""OpenTelemetry traces, configured by the standard `OTEL_*` variables and off unless they ask.

Tracing is on when an exporter is named: `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, or `OTEL_TRACES_EXPORTER` names `otlp` or
`console`; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps it off. The SDK
reads the rest itself: `OTEL_SERVICE_NAME` (default here: `orders`), `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_PROPAGATORS`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_*`
(headers, timeout, certificates). OTLP goes over HTTP/protobuf.

When off, nothing is installed: no middleware, no wrapped driver or client, no thread, and
the OpenTelemetry SDK is not even imported (`orders.observability.otel` holds what needs it).
When on, the service traces incoming requests (one server span each), every statement sent
to PostgreSQL (asyncpg's calls, whether SQLAlchemy or the service made them) and every call
to payments and kitchen, passing `traceparent` on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from orders.observability.otel import Tracing

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


def tracing_from_environment(environ: Mapping[str, str]) -> Tracing | None:
    """Tracing as the OTEL_* variables in `environ` describe it; None when off.

    Raises TracingConfigurationError for an exporter or protocol it does not support.
    """
    name = _exporter_name(environ)
    if name is None:
        return None
    if name != "console":
        _check_protocol(environ)
    from orders.observability.otel import Tracing

    return Tracing.with_exporter(name)
