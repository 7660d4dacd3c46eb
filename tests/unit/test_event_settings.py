"""The broker settings: optional, validated, secret."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orders.adapters.events import BROKER_DELIVERY_LIMIT
from orders.settings import EventSettings

DATABASE = "postgresql://orders@db:5432/orders"


def test_no_broker_url_means_no_broker() -> None:
    assert EventSettings(database_url=DATABASE).broker_url is None
    assert EventSettings(database_url=DATABASE, broker_url="").broker_url is None


def test_the_broker_url_is_a_secret_amqp_url() -> None:
    settings = EventSettings(database_url=DATABASE, broker_url="amqp://u:hunter2@mq:5672/v")
    assert settings.broker_url is not None
    assert settings.broker_url.get_secret_value() == "amqp://u:hunter2@mq:5672/v"
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize("url", ["http://mq:5672/", "mq:5672", "redis://mq"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="amqp"):
        EventSettings(database_url=DATABASE, broker_url=url)


def test_attempts_stay_below_the_queues_own_delivery_limit() -> None:
    limit = EventSettings.model_fields["consumer_max_attempts"].metadata
    assert any(getattr(bound, "le", 0) < BROKER_DELIVERY_LIMIT for bound in limit)
