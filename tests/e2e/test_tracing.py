"""Traces from a real server: OTLP/HTTP to a local receiver, the caller's trace continued, SQL
and the calls to payments and kitchen in it with `traceparent` passed on, and the trace id
in the request's JSON log line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import AUDIENCE, ISSUER, ROOT, TokenFactory
from tests.e2e.test_prometheus import eventually
from tests.e2e.test_shutdown import free_port, stop, wait_until_up
from tests.support import LATTE

pytestmark = pytest.mark.slow

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Collaborators:
    """Payments, kitchen and an OTLP trace receiver on one local HTTP server."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.traceparents: dict[str, str | None] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    with owner.lock:
                        for resource in request.resource_spans:
                            for scope in resource.scope_spans:
                                owner.spans.extend(scope.spans)
                    self._answer(200, ExportTraceServiceResponse().SerializeToString())
                    return
                with owner.lock:
                    owner.traceparents[self.path] = self.headers.get("traceparent")
                if self.path == "/payments":
                    answer = {"payment_id": str(uuid.uuid4()), "status": "paid"}
                else:
                    answer = {"id": "schedule-1"}
                self._answer(201, json.dumps(answer).encode(), "application/json")

            def _answer(
                self, status: int, body: bytes, kind: str = "application/x-protobuf"
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def names_in(self, trace_id: str) -> list[str]:
        with self.lock:
            return [span.name for span in self.spans if span.trace_id.hex() == trace_id]


@pytest.fixture
def collaborators_server() -> Iterator[Collaborators]:
    collaborators = Collaborators()
    thread = threading.Thread(target=collaborators.server.serve_forever)
    thread.start()
    try:
        yield collaborators
    finally:
        collaborators.server.shutdown()
        collaborators.server.server_close()
        thread.join()


@pytest.fixture
def traced_server(
    tmp_path: Path,
    clean_database: str,
    key_pair: tuple[bytes, bytes],
    collaborators_server: Collaborators,
) -> Iterator[tuple[str, Path]]:
    """The service with tracing on, exporting to the receiver: (URL, its log file)."""
    port = free_port()
    log = tmp_path / "orders.log"
    env = {
        **os.environ,
        "DATABASE_URL": clean_database,
        "JWT_PUBLIC_KEY": key_pair[1].decode(),
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_ISSUER": ISSUER,
        "PAYMENTS_URL": collaborators_server.url,
        "KITCHEN_URL": collaborators_server.url,
        "SECRETS_DIR": str(tmp_path / "no-secrets"),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collaborators_server.url,
        "OTEL_SERVICE_NAME": "orders-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "orders.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/health/live", process, log)
        yield url, log
    finally:
        stop(process)


def test_a_pay_is_one_trace_from_the_caller_to_payments_and_kitchen(
    traced_server: tuple[str, Path],
    collaborators_server: Collaborators,
    token_for: TokenFactory,
) -> None:
    url, log = traced_server
    headers = {"Authorization": f"Bearer {token_for('alice')}"}
    placed = httpx.post(f"{url}/orders", json={"order": [LATTE]}, headers=headers, timeout=10)
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]

    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    paid = httpx.post(
        f"{url}/orders/{order_id}/pay",
        headers={**headers, "traceparent": traceparent},
        timeout=10,
    )
    assert paid.status_code == 200, paid.text

    # payments and kitchen were called within the caller's trace.
    for path in ("/payments", "/kitchen/schedules"):
        passed_on = collaborators_server.traceparents[path]
        assert passed_on is not None
        assert passed_on.split("-")[1] == CALLER_TRACE

    eventually(
        lambda: "POST /orders/{order_id}/pay" in collaborators_server.names_in(CALLER_TRACE),
        "the pay request's server span",
    )
    with collaborators_server.lock:
        spans = [s for s in collaborators_server.spans if s.trace_id.hex() == CALLER_TRACE]
    server_span = next(s for s in spans if s.name == "POST /orders/{order_id}/pay")
    assert server_span.parent_span_id.hex() == CALLER_SPAN
    attributes = {a.key: a.value for a in server_span.attributes}
    assert attributes["http.route"].string_value == "/orders/{order_id}/pay"
    assert attributes["http.response.status_code"].int_value == 200
    # Both outgoing calls and the SQL statements hang under the server span's trace.
    assert sum(1 for s in spans if s.name == "POST") == 2
    sql = [s for s in spans if any(a.key == "db.system" for a in s.attributes)]
    assert sql, [s.name for s in spans]

    # The pay request's log line carries the trace id; the place request has a trace of its own.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    access = {line["path"]: line for line in lines if line["logger"] == "orders.access"}
    assert access["/orders/{order_id}/pay"]["trace_id"] == CALLER_TRACE
    own_trace = access["/orders"]["trace_id"]
    assert len(own_trace) == 32
    assert own_trace != CALLER_TRACE
