"""The typed Python client generated from the served OpenAPI document (`clients/generate
python`, openapi-python-client) drives a real service process: an order's whole life and
the errors a client must handle, every answer parsed into the generated types.

The client is generated afresh from what the running service serves, with no generator
warning allowed, so a change of the document that breaks generated clients fails here.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from orders.web.openapi import OPENAPI_PATH
from orders_dev.standins import Behaviour, Ledger
from tests.conftest import TokenFactory
from tests.support import ROOT, standins_server, start_server, stop, wait_until_up

pytestmark = pytest.mark.slow

PACKAGE = "orders_client"


@pytest.fixture(scope="module")
async def service(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, key_pair: tuple[bytes, bytes]
) -> AsyncIterator[str]:
    """The service in a uvicorn process of its own, with the stand-ins on a real port."""
    async with standins_server(Behaviour(), Ledger()) as standins:
        process, url, log = start_server(
            tmp_path_factory.mktemp("service"), database_url, key_pair[1], standins
        )
        try:
            wait_until_up(f"{url}/health/ready", process, log)
            yield url
        finally:
            stop(process)


@pytest.fixture(scope="module")
def api(service: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package generated from the served document, importable for this module."""
    where = tmp_path_factory.mktemp("client")
    document = where / "orders.json"
    document.write_bytes(httpx.get(service + OPENAPI_PATH).raise_for_status().content)
    # The project's environment (its generator and ruff) first, as under `poetry run`.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    generated = subprocess.run(
        ["bash", str(ROOT / "clients" / "generate"), "python", str(document), str(where / "out")],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        check=False,
    )
    output = generated.stdout + generated.stderr
    assert generated.returncode == 0, output
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(where / "out"))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where / "out"))
        for name in [name for name in sys.modules if name.partition(".")[0] == PACKAGE]:
            del sys.modules[name]


def operation(name: str) -> Any:
    """A generated operation module: `operation("orders.place_order")`."""
    return importlib.import_module(f"{PACKAGE}.api.{name}")


@pytest.fixture
async def client(api: ModuleType, service: str, token_for: TokenFactory) -> AsyncIterator[Any]:
    token = token_for(f"client-{uuid.uuid4()}")
    async with api.AuthenticatedClient(base_url=service, token=token) as client:
        yield client


async def test_an_order_through_its_whole_life(api: ModuleType, client: Any) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    place = operation("orders.place_order")
    latte = models.NewOrderItem(product="latte", size=models.Size.BIG, quantity=2)
    tea = models.NewOrderItem(product="tea", size=models.Size.SMALL)

    placed = await place.asyncio_detailed(
        client=client, body=models.NewOrder(order=[latte, tea]), idempotency_key="place-1"
    )
    assert placed.status_code == 201
    order = placed.parsed
    assert isinstance(order, models.Order)
    assert order.status is models.OrderStatus.CREATED
    assert [(item.product, item.size, item.quantity) for item in order.order] == [
        ("latte", models.Size.BIG, 2),
        ("tea", models.Size.SMALL, 1),
    ]
    assert order.created.utcoffset() == timedelta(0)
    assert placed.headers["location"] == f"/orders/{order.id}"

    # The same key again: the stored answer, nothing placed twice.
    again = await place.asyncio_detailed(
        client=client, body=models.NewOrder(order=[latte, tea]), idempotency_key="place-1"
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert isinstance(again.parsed, models.Order)
    assert again.parsed.to_dict() == order.to_dict()

    read = await operation("orders.get_order").asyncio_detailed(order.id, client=client)
    assert read.status_code == 200
    assert isinstance(read.parsed, models.Order)
    assert read.parsed.to_dict() == order.to_dict()

    listed = await operation("orders.list_orders").asyncio_detailed(client=client)
    assert listed.status_code == 200
    assert isinstance(listed.parsed, models.OrderList)
    assert [each.id for each in listed.parsed.orders] == [order.id]

    mocha = models.NewOrderItem(product="mocha", size=models.Size.MEDIUM)
    updated = await operation("orders.update_order").asyncio_detailed(
        order.id, client=client, body=models.NewOrder(order=[mocha]), if_match=read.headers["etag"]
    )
    assert updated.status_code == 200
    assert isinstance(updated.parsed, models.Order)
    assert [item.product for item in updated.parsed.order] == ["mocha"]
    assert updated.parsed.order[0].quantity == 1

    paid = await operation("orders.pay_order").asyncio_detailed(
        order.id, client=client, idempotency_key="pay-1", if_match=updated.headers["etag"]
    )
    assert paid.status_code == 200
    assert isinstance(paid.parsed, models.Order)
    assert paid.parsed.status is models.OrderStatus.PROGRESS

    cancelled = await operation("orders.cancel_order").asyncio_detailed(
        order.id, client=client, idempotency_key="cancel-1"
    )
    assert cancelled.status_code == 200
    assert isinstance(cancelled.parsed, models.Order)
    assert cancelled.parsed.status is models.OrderStatus.CANCELLED

    deleted = await operation("orders.delete_order").asyncio_detailed(order.id, client=client)
    assert deleted.status_code == 204
    assert deleted.content == b""

    gone = await operation("orders.get_order").asyncio_detailed(order.id, client=client)
    assert gone.status_code == 404
    assert isinstance(gone.parsed, models.Error)
    assert gone.parsed.detail == "Order not found"


async def test_errors_are_typed(api: ModuleType, client: Any) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    latte = models.NewOrderItem(product="latte", size=models.Size.BIG)

    # The generated models check no limits: the service does, and says where.
    invalid = await operation("orders.place_order").asyncio_detailed(
        client=client, body=models.NewOrder(order=[])
    )
    assert invalid.status_code == 422
    assert isinstance(invalid.parsed, models.InvalidRequest)
    [problem] = invalid.parsed.detail
    assert isinstance(problem, models.ValidationProblem)
    assert problem.loc == ["body", "order"]
    assert problem.type_ == "too_short"

    missing = await operation("orders.pay_order").asyncio_detailed(uuid.uuid4(), client=client)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Error)

    placed = await operation("orders.place_order").asyncio(
        client=client, body=models.NewOrder(order=[latte])
    )
    assert isinstance(placed, models.Order)
    await operation("orders.pay_order").asyncio(placed.id, client=client)
    conflict = await operation("orders.update_order").asyncio_detailed(
        placed.id, client=client, body=models.NewOrder(order=[latte])
    )
    assert conflict.status_code == 409
    assert isinstance(conflict.parsed, models.Error)
    assert "progress" in conflict.parsed.detail

    stale = await operation("orders.cancel_order").asyncio_detailed(
        placed.id, client=client, if_match='"v1-00000000"'
    )
    assert stale.status_code == 412
    assert isinstance(stale.parsed, models.Error)


async def test_pages_follow_the_link(api: ModuleType, client: Any) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    place = operation("orders.place_order")
    list_orders = operation("orders.list_orders")
    ids = []
    for product in ("latte", "mocha", "tea"):
        item = models.NewOrderItem(product=product, size=models.Size.SMALL)
        placed = await place.asyncio(client=client, body=models.NewOrder(order=[item]))
        assert isinstance(placed, models.Order)
        ids.append(placed.id)

    seen = []
    after: Any = api.types.UNSET
    while True:
        page = await list_orders.asyncio_detailed(client=client, limit=2, after=after)
        assert isinstance(page.parsed, models.OrderList)
        seen.extend(each.id for each in page.parsed.orders)
        link = page.headers.get("link")
        if link is None:
            break
        [after] = parse_qs(urlsplit(link.split(";")[0].strip("<>")).query)["after"]

    assert seen == ids[::-1]


async def test_health_is_typed_and_open(api: ModuleType, service: str) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    async with api.Client(base_url=service) as anonymous:
        ready = await operation("health.ready").asyncio(client=anonymous)
        live = await operation("health.live").asyncio(client=anonymous)
    assert isinstance(ready, models.Health)
    assert isinstance(live, models.Health)
    assert ready.status is live.status is models.HealthStatus.OK
