"""What the endpoints need, made once per process by the app's lifespan, and the one way to
reach it from a request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from orders.service.idempotency import IdempotentRequests
from orders.service.orders import OrderService
from orders.web.pages import Pages
from orders.web.schemas import NewOrder
from orders.web.tokens import TokenVerifier


@dataclass(frozen=True, slots=True)
class Context:
    """The use cases and the deployment's request rules.

    `new_order` is the body model with this deployment's item limit; `database_ready`
    answers None when the database is reachable and migrated, else why it is not ready.
    """

    orders: OrderService
    verifier: TokenVerifier
    new_order: type[NewOrder]
    pages: Pages
    idempotent_requests: IdempotentRequests
    database_ready: Callable[[], Awaitable[str | None]]

    def as_state(self) -> dict[str, Context]:
        """The lifespan state that carries this context into every request."""
        return {_STATE_KEY: self}


_STATE_KEY = "context"


def context(connection: HTTPConnection) -> Context:
    """The context of the app that serves this request."""
    found = getattr(connection.state, _STATE_KEY, None)
    if not isinstance(found, Context):
        raise RuntimeError("no context: the app's lifespan has not run")
    return found
