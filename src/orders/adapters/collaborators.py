"""HTTP clients for the payments and kitchen services (DESIGN §3).

Both share the process's one `httpx.AsyncClient`, made in the app's lifespan with explicit
timeouts. Connection failures are retried by the transport (nothing reached the other side);
a request that was sent is retried only where repeating it is harmless (cancelling a
schedule). Charges and schedules carry an `Idempotency-Key`, so a call repeated after a
timeout or a crash is recognised by the other side rather than carried out twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx

from orders.domain import Order
from orders.service.ports import (
    CollaboratorBadAnswer,
    CollaboratorError,
    CollaboratorTimeout,
    CollaboratorUnavailable,
    PaymentRefused,
)
from orders.settings import Settings

logger = logging.getLogger(__name__)

CANCEL_ATTEMPTS = 3
CANCEL_BACKOFF_SECONDS = 0.2


def make_http_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The process's client for collaborators; `transport` replaces the network in tests."""
    timeout = httpx.Timeout(
        connect=settings.http_connect_timeout,
        read=settings.http_read_timeout,
        write=settings.http_read_timeout,
        pool=settings.http_connect_timeout,
    )
    return httpx.AsyncClient(
        timeout=timeout,
        transport=transport or httpx.AsyncHTTPTransport(retries=settings.http_connect_retries),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=False,
        headers={"User-Agent": "coffeemesh-orders"},
    )


async def _post(
    client: httpx.AsyncClient, service: str, url: str, json: Any, key: str | None = None
) -> httpx.Response:
    headers = {"Idempotency-Key": str(key)} if key is not None else None
    try:
        return await client.post(url, json=json, headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
        # No connection, so the request was never sent.
        unsent: type[CollaboratorError] = (
            CollaboratorUnavailable
            if isinstance(error, httpx.ConnectError)
            else CollaboratorTimeout
        )
        raise unsent(service, "could not be reached", delivered=False) from error
    except httpx.TimeoutException as error:
        raise CollaboratorTimeout(service, "did not answer in time") from error
    except httpx.TransportError as error:
        raise CollaboratorUnavailable(service, "dropped the connection") from error
    except httpx.RequestError as error:
        # An answer that cannot be read (bad encoding, redirect loops).
        raise CollaboratorBadAnswer(service, "answered unreadably") from error


def _json_object(service: str, response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise CollaboratorBadAnswer(service, "answered with a body that is not a JSON object")
    return body


class HttpPayments:
    """`POST {PAYMENTS_URL}/payments {"order_id"}` → 201 `{"payment_id", "status"}`."""

    service = "payments"

    def __init__(self, client: httpx.AsyncClient, base_url: str) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/payments"

    async def charge(self, order_id: UUID, idempotency_key: str) -> UUID:
        response = await _post(
            self._client, self.service, self._url, {"order_id": str(order_id)}, idempotency_key
        )
        if response.status_code != httpx.codes.CREATED:
            # A 4xx turned the request down; after a 5xx the charge may or may not exist.
            raise CollaboratorBadAnswer(
                self.service,
                f"answered {response.status_code}",
                delivered=response.status_code >= httpx.codes.INTERNAL_SERVER_ERROR,
            )
        body = _json_object(self.service, response)
        status = body.get("status")
        if status == "invalid":
            raise PaymentRefused(order_id)
        if status != "paid":
            # "pending" (or anything else) is not a charge we can stand on.
            raise CollaboratorBadAnswer(self.service, f"payment status is {status!r}")
        try:
            return UUID(str(body["payment_id"]))
        except (KeyError, ValueError):
            raise CollaboratorBadAnswer(self.service, "answered without a payment id") from None


class HttpKitchen:
    """`POST {KITCHEN_URL}/kitchen/schedules` and `.../schedules/{id}/cancel`."""

    service = "kitchen"

    def __init__(self, client: httpx.AsyncClient, base_url: str) -> None:
        self._client = client
        self._base = base_url.rstrip("/") + "/kitchen/schedules"

    async def schedule(self, order: Order) -> str:
        items = [
            {"product": item.product, "size": item.size.value, "quantity": item.quantity}
            for item in order.items
        ]
        response = await _post(
            self._client, self.service, self._base, {"order": items}, str(order.id)
        )
        if response.status_code != httpx.codes.CREATED:
            raise CollaboratorBadAnswer(self.service, f"answered {response.status_code}")
        schedule_id = _json_object(self.service, response).get("id")
        if not isinstance(schedule_id, str | int) or isinstance(schedule_id, bool):
            raise CollaboratorBadAnswer(self.service, "answered without a schedule id")
        return str(schedule_id)

    async def cancel(self, schedule_id: str) -> None:
        url = f"{self._base}/{quote(schedule_id, safe='')}/cancel"
        # Cancelling is idempotent, so a lost answer or a 5xx is worth a bounded retry.
        for attempt in range(1, CANCEL_ATTEMPTS + 1):
            try:
                response = await _post(self._client, self.service, url, None)
            except CollaboratorError:
                if attempt == CANCEL_ATTEMPTS:
                    raise
            else:
                if response.status_code == httpx.codes.OK:
                    return
                if response.status_code < 500 or attempt == CANCEL_ATTEMPTS:
                    raise CollaboratorBadAnswer(
                        self.service, f"refused to cancel (answered {response.status_code})"
                    )
            logger.info("kitchen cancel of %s failed, retrying (attempt %d)", schedule_id, attempt)
            await asyncio.sleep(CANCEL_BACKOFF_SECONDS * 2 ** (attempt - 1))
