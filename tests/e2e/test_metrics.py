"""The metrics endpoint of one app: what a scrape shows after real requests, where it is
served (its own port, never the API's), and that unknown paths add no series."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from orders.app import create_app
from orders.settings import Settings
from tests.conftest import TokenFactory
from tests.support import client_for, place

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
async def observed_app(
    settings: Settings, collaborators: httpx.AsyncBaseTransport, metrics_port: int
) -> AsyncIterator[Starlette]:
    configured = settings.model_copy(
        update={
            "metrics_port": metrics_port,
            "metrics_host": "127.0.0.1",
            "build_commit": "abc1234",
        }
    )
    application = create_app(configured, transport=collaborators)
    async with LifespanManager(application) as manager:
        yield manager.app  # type: ignore[misc]


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_requests_are_counted_by_route_template_method_and_status(
    observed_app: Starlette, token_for: TokenFactory, metrics_port: int
) -> None:
    async with client_for(observed_app, token_for("alice")) as client:
        order = await place(client)
        for _ in range(3):
            assert (await client.get(f"/orders/{order['id']}")).status_code == 200
        assert (await client.get("/orders/7a4c0b1e-0000-4000-8000-000000000000")).status_code == 404
        assert (await client.patch("/orders")).status_code == 405
    async with client_for(observed_app) as anonymous:
        assert (await anonymous.get("/orders")).status_code == 401

    samples = await scrape(metrics_port)
    requests = "orders_http_requests_total"
    assert value(samples, requests, route="/orders", method="POST", status="201") == 1
    assert value(samples, requests, route="/orders/{order_id}", method="GET", status="200") == 3
    assert value(samples, requests, route="/orders/{order_id}", method="GET", status="404") == 1
    assert value(samples, requests, route="/orders", method="PATCH", status="405") == 1
    assert value(samples, requests, route="/orders", method="GET", status="401") == 1
    count = "orders_http_request_duration_seconds_count"
    assert value(samples, count, route="/orders/{order_id}", method="GET") == 4
    assert value(samples, "orders_build_info", version="1.0.0", commit="abc1234") == 1
    # Every connection went back to the pool; the pool's capacity is its configured size.
    assert value(samples, "orders_db_pool_connections_in_use") == 0
    assert value(samples, "orders_db_pool_capacity") == 15
    assert value(samples, "process_resident_memory_bytes")


async def test_unknown_paths_and_methods_share_one_series(
    observed_app: Starlette, metrics_port: int
) -> None:
    async with client_for(observed_app) as client:
        for path in ("/nope", "/orders/1/2/3", "/wp-admin.php?x=1", "/metrics"):
            assert (await client.get(path)).status_code == 404
        assert (await client.request("BREW", "/health/live")).status_code == 405

    samples = await scrape(metrics_port)
    routes = {
        dict(labels)["route"] for name, labels in samples if name == "orders_http_requests_total"
    }
    assert routes == {"(unmatched)", "/health/live"}
    assert (
        value(
            samples, "orders_http_requests_total", route="(unmatched)", method="GET", status="404"
        )
        == 4
    )
    assert (
        value(
            samples,
            "orders_http_requests_total",
            route="/health/live",
            method="OTHER",
            status="405",
        )
        == 1
    )


async def test_the_endpoint_answers_metrics_only(
    observed_app: Starlette, metrics_port: int
) -> None:
    base = f"http://127.0.0.1:{metrics_port}"
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/orders")).status_code == 404
        assert (await client.post(f"{base}/metrics")).status_code == 405
        head = await client.head(f"{base}/metrics")
        assert head.status_code == 200
        assert head.content == b""
        openmetrics = await client.get(
            f"{base}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")


async def test_metrics_are_not_served_unless_a_port_is_set(
    settings: Settings, collaborators: httpx.AsyncBaseTransport
) -> None:
    assert settings.metrics_port is None
    application = create_app(settings, transport=collaborators)
    names = [middleware.cls.__name__ for middleware in application.user_middleware]
    assert "RequestMetricsMiddleware" not in names
    assert "TracingMiddleware" not in names


async def test_the_outbox_lag_is_exported(
    settings: Settings,
    collaborators: httpx.AsyncBaseTransport,
    metrics_port: int,
    token_for: TokenFactory,
) -> None:
    # No broker: the placed order's event waits in the outbox, and its age shows.
    configured = settings.model_copy(
        update={
            "metrics_port": metrics_port,
            "metrics_host": "127.0.0.1",
            "reconcile_interval_seconds": 0.05,
        }
    )
    async with (
        LifespanManager(create_app(configured, transport=collaborators)) as manager,
        client_for(manager.app, token_for("alice")) as client,
    ):
        await place(client)
        samples: Samples = {}
        for _ in range(100):
            samples = await scrape(metrics_port)
            if (value(samples, "orders_outbox_lag_seconds") or 0) > 0:
                break
            await asyncio.sleep(0.05)

    assert value(samples, "orders_outbox_waiting") == 1
    assert (value(samples, "orders_outbox_lag_seconds") or 0) > 0
    assert value(samples, "orders_events_published_total") == 0
