"""When the OTEL_* variables turn tracing on, and what they may not ask for."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME

from orders.observability.tracing import Tracing, TracingConfigurationError


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
        {"OTEL_SERVICE_NAME": "orders"},
    ],
)
def test_tracing_is_off_unless_an_exporter_is_named(environ: dict[str, str]) -> None:
    assert Tracing.from_environment(environ) is None


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"},
        {"OTEL_TRACES_EXPORTER": "otlp"},
        {"OTEL_TRACES_EXPORTER": "console"},
    ],
)
def test_an_exporter_or_an_endpoint_turns_it_on(environ: dict[str, str]) -> None:
    tracing = Tracing.from_environment(environ)
    assert tracing is not None
    assert tracing.provider.resource.attributes[SERVICE_NAME] == "orders"
    tracing.provider.shutdown()


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_what_it_cannot_do_is_refused_in_one_line(environ: dict[str, str], named: str) -> None:
    with pytest.raises(TracingConfigurationError, match=named) as raised:
        Tracing.from_environment(environ)
    assert "\n" not in str(raised.value)
