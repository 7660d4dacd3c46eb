"""When the OTEL_* variables turn tracing on, and what they may not ask for."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME

from orders.observability.tracing import TracingConfigurationError, tracing_from_environment


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
    assert tracing_from_environment(environ) is None


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
    tracing = tracing_from_environment(environ)
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
        tracing_from_environment(environ)
    assert "\n" not in str(raised.value)


def test_an_app_without_tracing_does_not_load_the_sdk(key_pair: tuple[bytes, bytes]) -> None:
    # A fresh interpreter: this test process has the SDK loaded by the imports above.
    probe = (
        "import sys\n"
        "from orders.app import create_app\n"
        "create_app()\n"
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('opentelemetry.')}))"
    )
    environ = {
        key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "JWT_"))
    }
    environ.update(
        DATABASE_URL="postgresql://orders@db.invalid/orders",
        JWT_PUBLIC_KEY=key_pair[1].decode(),
        JWT_AUDIENCE="orders",
        JWT_ISSUER="tests",
        PAYMENTS_URL="http://payments.invalid",
        KITCHEN_URL="http://kitchen.invalid",
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], env=environ, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout
