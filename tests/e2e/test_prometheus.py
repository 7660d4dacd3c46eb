"""A real Prometheus (Debian's package) scrapes a real server with two workers while requests
flow; PromQL through its HTTP API sees every worker's requests added up, each worker's
process, and a charge left pending by payments answering 503, counted by the reconciler,
then resolved once payments answers again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import AUDIENCE, ISSUER, ROOT, TokenFactory
from tests.e2e.test_shutdown import free_port, stop, wait_until_up
from tests.support import LATTE

pytestmark = pytest.mark.slow

SCRAPE_INTERVAL = "1s"


class Payments:
    """Payments and kitchen on a local HTTP server: payments answers 503 until `healthy`."""

    def __init__(self) -> None:
        self.healthy = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/payments" and not owner.healthy.is_set():
                    status, answer = 503, {"detail": "down for maintenance"}
                elif self.path == "/payments":
                    status, answer = 201, {"payment_id": str(uuid.uuid4()), "status": "paid"}
                else:
                    status, answer = 201, {"id": "schedule-1"}
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def payments() -> Iterator[Payments]:
    collaborator = Payments()
    thread = threading.Thread(target=collaborator.server.serve_forever)
    thread.start()
    try:
        yield collaborator
    finally:
        collaborator.server.shutdown()
        collaborator.server.server_close()
        thread.join()


def binary(name: str) -> str:
    """The path of a Prometheus tool; CI installs them, elsewhere the test says how."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (apt-get install prometheus)")
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return path


@pytest.fixture
def multiprocess_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "metrics"
    directory.mkdir()
    return directory


@pytest.fixture
def server(
    tmp_path: Path,
    clean_database: str,
    key_pair: tuple[bytes, bytes],
    multiprocess_dir: Path,
    payments: Payments,
) -> Iterator[tuple[str, int]]:
    """The service with two workers: (API URL, metrics port)."""
    api_port, metrics_port = free_port(), free_port()
    log = tmp_path / "orders.log"
    env = {
        **os.environ,
        "DATABASE_URL": clean_database,
        "JWT_PUBLIC_KEY": key_pair[1].decode(),
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_ISSUER": ISSUER,
        "PAYMENTS_URL": payments.url,
        "KITCHEN_URL": payments.url,
        "RECONCILE_INTERVAL_SECONDS": "0.5",
        "RECONCILE_RETRY_MAX_SECONDS": "1",
        "SECRETS_DIR": str(tmp_path / "no-secrets"),
        "WEB_CONCURRENCY": "2",
        "METRICS_PORT": str(metrics_port),
        "METRICS_HOST": "127.0.0.1",
        "BUILD_COMMIT": "0123abc",
        "PROMETHEUS_MULTIPROC_DIR": str(multiprocess_dir),
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "orders.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(api_port), "--no-access-log"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{api_port}"
        wait_until_up(f"{url}/health/live", process, log)
        wait_until_up(f"http://127.0.0.1:{metrics_port}/metrics", process, log)
        yield url, metrics_port
    finally:
        stop(process)


@pytest.fixture
def prometheus(tmp_path: Path, server: tuple[str, int]) -> Iterator[str]:
    """Prometheus scraping the service's metrics port every second: its API's URL."""
    executable = binary("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: orders\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{server[1]}']}}]\n"
    )
    log = tmp_path / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                executable,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/-/ready", process, log)
        yield url
    finally:
        stop(process)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar(prometheus: str, promql: str) -> float | None:
    result = query(prometheus, promql)
    return float(result[0]["value"][1]) if result else None


def eventually(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not seen within {seconds:g} s: {what}")


class Traffic:
    """Requests from two threads until stopped; counts what each route answered."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.sent = {"/health/ready": 0, "/orders": 0}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(path,)) for path in self.sent]

    def _run(self, path: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        # A new connection per request spreads the requests over both workers.
        while not self._stop.is_set():
            response = httpx.get(f"{self.url}{path}", headers=headers, timeout=5)
            assert response.status_code == 200, response.text
            self.sent[path] += 1
            time.sleep(0.01)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_prometheus_sees_both_workers_and_a_pending_charge(
    server: tuple[str, int],
    prometheus: str,
    payments: Payments,
    token_for: TokenFactory,
) -> None:
    url, _ = server
    rate = 'sum(rate(orders_http_requests_total{job="orders",route="/health/ready"}[5s]))'
    with Traffic(url, token_for("alice")) as traffic:
        eventually(lambda: (scalar(prometheus, rate) or 0) > 1, "a request rate above 1/s")
        # Both workers served requests and report their own process.
        eventually(
            lambda: len(query(prometheus, 'process_resident_memory_bytes{job="orders"}')) == 2,
            "two worker processes",
        )
    assert traffic.sent["/health/ready"] > 0

    # Once traffic stops, the count summed over both workers is every request sent.
    for path, sent in traffic.sent.items():
        total = f'sum(orders_http_requests_total{{job="orders",route="{path}",status="200"}})'
        eventually(lambda t=total, n=sent: scalar(prometheus, t) == n, f"{sent} on {path}")
    served_by = query(prometheus, 'orders_http_requests_total{job="orders"}')
    assert {series["metric"]["route"] for series in served_by} >= {"/health/ready", "/orders"}
    assert scalar(prometheus, 'orders_build_info{commit="0123abc"}') == 1
    assert scalar(prometheus, "sum(orders_db_pool_capacity)") == 2 * 15
    # The public port does not serve the metrics.
    assert httpx.get(f"{url}/metrics").status_code == 404

    # payments answers 503: the charge's outcome is unknown, so it stays pending and the
    # reconciler (in both workers) counts it, through the metrics' pending_outcomes.
    headers = {"Authorization": f"Bearer {token_for('alice')}"}
    placed = httpx.post(f"{url}/orders", json={"order": [LATTE]}, headers=headers, timeout=10)
    assert placed.status_code == 201, placed.text
    paid = httpx.post(f"{url}/orders/{placed.json()['id']}/pay", headers=headers, timeout=10)
    assert paid.status_code == 502, paid.text
    pending = 'max(orders_pending_outcomes{job="orders",kind="charge"})'
    eventually(lambda: scalar(prometheus, pending) == 1, "one pending charge")
    age = 'max(orders_pending_outcome_oldest_age_seconds{job="orders",kind="charge"})'
    assert (scalar(prometheus, age) or 0) > 0
    assert scalar(prometheus, 'max(orders_pending_outcomes{job="orders",kind="refund"})') == 0
    unknown = (
        'sum(orders_collaborator_calls_total{job="orders",service="payments",'
        'operation="charge",outcome="unknown"})'
    )
    assert (scalar(prometheus, unknown) or 0) >= 1
    placed_events = 'sum(orders_order_events_total{job="orders",type="order.placed"})'
    assert scalar(prometheus, placed_events) == 1

    # payments is back: the reconciler repeats the charge, learns it, and nothing is pending.
    payments.healthy.set()
    eventually(lambda: scalar(prometheus, pending) == 0, "no pending charge")
    paid_events = 'sum(orders_order_events_total{job="orders",type="order.paid"})'
    eventually(lambda: scalar(prometheus, paid_events) == 1, "the order paid")
