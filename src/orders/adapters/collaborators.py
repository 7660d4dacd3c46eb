"""HTTP clients for the payments and kitchen services (docs/collaborators.md).

Both share the process's one `httpx.AsyncClient`, made in the app's lifespan with explicit
timeouts, and every call has an overall deadline besides (a server that trickles its answer
byte by byte never outlives it). Connection failures are retried by the transport (nothing
reached the other side); a request that was sent is retried here only where repeating it is
harmless (cancelling a schedule). Charges, schedules and refunds carry an `Idempotency-Key`,
so a call repeated after an unknown outcome is recognised by the other side rather than
carried out twice.

A failure says whether its outcome is unknown: only a request never sent, or one the other
side rejected outright (400, 401, 403, 404, 422), surely took no effect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import quote
from uuid import UUID

import httpx

from orders.domain import OrderItem
from orders.service.ports import (
    CollaboratorBadAnswer,
    CollaboratorError,
    CollaboratorTimeout,
    CollaboratorUnavailable,
    PaymentRefused,
    RefundRefused,
)
from orders.settings import Settings

logger = logging.getLogger(__name__)

CANCEL_ATTEMPTS = 3
CANCEL_BACKOFF_SECONDS = 0.2
# Answers that turn a request down before it does anything.
REJECTED: Final = frozenset({400, 401, 403, 404, 422})


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
    client: httpx.AsyncClient,
    service: str,
    url: str,
    json: Any,
    key: str | None = None,
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else None
    try:
        return await client.post(url, json=json, headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
        # No connection, so the request was never sent.
        unsent: type[CollaboratorError] = (
            CollaboratorUnavailable
            if isinstance(error, httpx.ConnectError)
            else CollaboratorTimeout
        )
        raise unsent(service, "could not be reached", unknown_outcome=False) from error
    except httpx.TimeoutException as error:
        raise CollaboratorTimeout(service, "did not answer in time") from error
    except httpx.TransportError as error:
        raise CollaboratorUnavailable(service, "dropped the connection") from error
    except httpx.RequestError as error:
        # An answer that cannot be read (bad encoding, redirect loops).
        raise CollaboratorBadAnswer(service, "answered unreadably") from error


def _unexpected(service: str, response: httpx.Response) -> CollaboratorBadAnswer:
    code = response.status_code
    return CollaboratorBadAnswer(service, f"answered {code}", unknown_outcome=code not in REJECTED)


def _json_object(service: str, response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise CollaboratorBadAnswer(service, "answered with a body that is not a JSON object")
    return body


CallObserver = Callable[[str, str, str, float], None]
"""Hears every call: (service, operation, outcome, seconds), the outcome one of `ok`,
`refused` (payments said no), `unknown` (it may have taken effect) or `failed` (it surely
did not)."""


class _Collaborator:
    """Every call of one collaborator ends within `deadline` seconds, retries included, and
    is reported to `on_call`."""

    service: str
    path: str

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        deadline: float,
        on_call: CallObserver | None = None,
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + self.path
        self._deadline = deadline
        self._on_call = on_call

    @asynccontextmanager
    async def _call(self, operation: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        outcome = "failed"
        try:
            async with asyncio.timeout(self._deadline):
                yield
            outcome = "ok"
        except TimeoutError:
            outcome = "unknown"
            raise CollaboratorTimeout(
                self.service, f"did not answer within {self._deadline:g} s"
            ) from None
        except (PaymentRefused, RefundRefused):
            outcome = "refused"
            raise
        except CollaboratorError as error:
            outcome = "unknown" if error.unknown_outcome else "failed"
            raise
        finally:
            if self._on_call is not None:
                self._on_call(self.service, operation, outcome, time.perf_counter() - started)


class HttpPayments(_Collaborator):
    """`POST {PAYMENTS_URL}/payments {"order_id"}` → 201 `{"payment_id", "status"}`;
    `POST {PAYMENTS_URL}/payments/{payment_id}/refund` → 201 `{"refund_id", "status"}`."""

    service = "payments"
    path = "/payments"

    async def charge(self, order_id: UUID, idempotency_key: str) -> UUID:
        async with self._call("charge"):
            return await self._charge(order_id, idempotency_key)

    async def refund(self, payment_id: UUID, idempotency_key: str) -> UUID:
        async with self._call("refund"):
            return await self._refund(payment_id, idempotency_key)

    async def _charge(self, order_id: UUID, idempotency_key: str) -> UUID:
        response = await _post(
            self._client, self.service, self._url, {"order_id": str(order_id)}, idempotency_key
        )
        if response.status_code != httpx.codes.CREATED:
            raise _unexpected(self.service, response)
        body = _json_object(self.service, response)
        status = body.get("status")
        if status == "invalid":
            raise PaymentRefused(order_id)
        if status != "paid":
            # "pending" (or anything else) is not a charge we can stand on, nor a refusal.
            raise CollaboratorBadAnswer(self.service, f"payment status is {status!r}")
        return _uuid(self.service, body, "payment_id")

    async def _refund(self, payment_id: UUID, idempotency_key: str) -> UUID:
        url = f"{self._url}/{payment_id}/refund"
        response = await _post(self._client, self.service, url, None, idempotency_key)
        if response.status_code != httpx.codes.CREATED:
            raise _unexpected(self.service, response)
        body = _json_object(self.service, response)
        status = body.get("status")
        if status == "invalid":
            raise RefundRefused(payment_id, "payments answered invalid")
        if status != "refunded":
            raise CollaboratorBadAnswer(self.service, f"refund status is {status!r}")
        return _uuid(self.service, body, "refund_id")


def _uuid(service: str, body: dict[str, Any], name: str) -> UUID:
    try:
        return UUID(str(body[name]))
    except (KeyError, ValueError):
        raise CollaboratorBadAnswer(service, f"answered without a valid {name}") from None


class HttpKitchen(_Collaborator):
    """`POST {KITCHEN_URL}/kitchen/schedules` and `.../schedules/{id}/cancel`."""

    service = "kitchen"
    path = "/kitchen/schedules"

    async def schedule(self, order_id: UUID, items: Sequence[OrderItem]) -> str:
        async with self._call("schedule"):
            return await self._schedule(order_id, items)

    async def cancel(self, schedule_id: str) -> None:
        async with self._call("cancel"):
            await self._cancel(schedule_id)

    async def _schedule(self, order_id: UUID, items: Sequence[OrderItem]) -> str:
        body = {
            "order": [
                {"product": item.product, "size": item.size.value, "quantity": item.quantity}
                for item in items
            ]
        }
        response = await _post(self._client, self.service, self._url, body, str(order_id))
        if response.status_code != httpx.codes.CREATED:
            raise _unexpected(self.service, response)
        schedule_id = _json_object(self.service, response).get("id")
        if not isinstance(schedule_id, str | int) or isinstance(schedule_id, bool):
            raise CollaboratorBadAnswer(self.service, "answered without a schedule id")
        return str(schedule_id)

    async def _cancel(self, schedule_id: str) -> None:
        url = f"{self._url}/{quote(schedule_id, safe='')}/cancel"
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
