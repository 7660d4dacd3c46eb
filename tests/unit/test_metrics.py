"""The recording calls of `Metrics`: what each one adds, and the label values they refuse."""

from __future__ import annotations

import pytest

from orders.observability.metrics import Metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_collaborator_calls_are_counted_by_outcome_and_timed() -> None:
    metrics = Metrics()
    metrics.collaborator_call("payments", "charge", "ok", 0.03)
    metrics.collaborator_call("payments", "charge", "unknown", 5.0)
    metrics.collaborator_call("payments", "charge", "unknown", 5.0)

    calls = "orders_collaborator_calls_total"
    assert sample(metrics, calls, service="payments", operation="charge", outcome="ok") == 1
    assert sample(metrics, calls, service="payments", operation="charge", outcome="unknown") == 2
    duration = "orders_collaborator_call_duration_seconds"
    assert sample(metrics, f"{duration}_count", service="payments", operation="charge") == 3
    assert sample(
        metrics, f"{duration}_sum", service="payments", operation="charge"
    ) == pytest.approx(10.03)


def test_an_outcome_outside_the_four_is_refused() -> None:
    with pytest.raises(ValueError, match="outcome"):
        Metrics().collaborator_call("payments", "charge", "timeout", 1.0)


def test_order_events_are_counted_by_type() -> None:
    metrics = Metrics()
    metrics.order_event("order.placed")
    metrics.order_events(["order.paid", "order.paid"])
    assert sample(metrics, "orders_order_events_total", type="order.paid") == 2
    with pytest.raises(ValueError, match="event type"):
        metrics.order_event("/orders/1234")


def test_pending_outcomes_hold_the_latest_count_and_age() -> None:
    metrics = Metrics()
    metrics.pending_outcomes("charge", 3, 125.0)
    metrics.pending_outcomes("charge", 0, 0.0)
    metrics.pending_outcomes("refund", 1, 40.0)

    assert sample(metrics, "orders_pending_outcomes", kind="charge") == 0
    assert sample(metrics, "orders_pending_outcome_oldest_age_seconds", kind="charge") == 0
    assert sample(metrics, "orders_pending_outcomes", kind="refund") == 1
    assert sample(metrics, "orders_pending_outcome_oldest_age_seconds", kind="refund") == 40
    assert sample(metrics, "orders_pending_outcomes_counted_timestamp_seconds", kind="refund")
    with pytest.raises(ValueError, match="kind"):
        metrics.pending_outcomes("payment", 1, 1.0)


def test_statement_errors_are_counted_by_sqlstate_class() -> None:
    metrics = Metrics()
    metrics.statement_error("23505")
    metrics.statement_error("23503")
    metrics.statement_error("57014")
    metrics.statement_error(None, disconnect=True)
    metrics.statement_error(None)
    metrics.statement_error("??")
    errors = "orders_db_statement_errors_total"
    assert sample(metrics, errors, sqlstate_class="23") == 2
    assert sample(metrics, errors, sqlstate_class="57") == 1
    assert sample(metrics, errors, sqlstate_class="connection") == 1
    assert sample(metrics, errors, sqlstate_class="driver") == 1
    assert sample(metrics, errors, sqlstate_class="other") == 1


def test_methods_outside_http_s_own_share_one_label() -> None:
    metrics = Metrics()
    metrics.request("/orders", "GET", 200, 0.01)
    metrics.request("/orders", "BREW", 405, 0.01)
    metrics.request("/orders", "QUERY", 405, 0.01)
    requests = "orders_http_requests_total"
    assert sample(metrics, requests, route="/orders", method="GET", status="200") == 1
    assert sample(metrics, requests, route="/orders", method="OTHER", status="405") == 2


def test_two_apps_in_one_process_count_apart() -> None:
    first, second = Metrics(), Metrics()
    first.order_event("order.placed")
    assert sample(second, "orders_order_events_total", type="order.placed") is None
