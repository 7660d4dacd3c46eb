"""Schemathesis over every operation of the served document, against the real app: a real
database, real tokens, the stand-in collaborators. Its default checks (server errors,
status codes, content types, headers, response schemas, negative and positive data,
authentication, allowed methods) must all pass.

    SCHEMATHESIS_MAX_EXAMPLES=500 poetry run pytest tests/e2e/test_fuzz.py

runs a deeper pass; the default keeps the suite quick. Generation is derandomized, so a run
with the same settings repeats exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import ValidationError
from schemathesis.config import PositiveDataAcceptanceConfig
from schemathesis.python.asgi import get_client, shutdown_lifespans
from sqlalchemy.engine import make_url
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orders.app import create_app
from orders.domain import OrderStatus, OrderView
from orders.settings import Settings
from orders.web.openapi import OPENAPI_PATH, default_document
from orders.web.pages import Pages, make_pages
from tests.conftest import TokenFactory
from tests.support import asyncpg_dsn

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))


class Target:
    """The ASGI app schemathesis calls, and the token it sends. Operations are collected, and
    bound to an app, before any database or key exists, so each test fills these in.
    (schemathesis.pytest.from_fixture would defer loading, but breaks on pytest 9.2.)"""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None
        self.token = ""
        self.pages: Pages | None = None
        self.requests = 0
        # Successful calls on one order: with made-up ids they are 404, so these show that
        # an order the run created was used again.
        self.order_successes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            raise RuntimeError("no app: request the served_app fixture")
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests += 1

        async def counting_send(message: Message) -> None:
            if (
                message["type"] == "http.response.start"
                and 200 <= message["status"] < 300
                and scope["path"].startswith("/orders/")
            ):
                self.order_successes += 1
            await send(message)

        await self.app(scope, receive, counting_send)


target = Target()
# The document a default deployment serves; served_app checks the app serves exactly this.
DOCUMENT = json.loads(json.dumps(default_document()))
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.app = target
# A valid If-Match that names another version of the order is rightly refused, as a valid
# action in the wrong status is (409, which schemathesis expects already).
schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
    expected_statuses=["2xx", "3xx", "401", "403", "404", "409", "412", "429", "5xx"]
)


@schema.auth(refresh_interval=None)
class BearerToken:
    """A real token, applied the way schemathesis knows of, so its negative cases can drop it."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        return target.token

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture
def served_app(
    settings: Settings, collaborators: httpx.AsyncBaseTransport, token_for: TokenFactory
) -> Iterator[None]:
    """The app, which schemathesis runs in its own event loop thread, lifespan included: the
    engine is made in that loop and never shared with the test's."""
    target.app = create_app(settings, transport=collaborators)
    target.token = token_for("fuzzer")
    # What the app signs its page cursors with (see create_app).
    target.pages = make_pages(
        settings.page_size,
        settings.page_size_max,
        (settings.page_cursor_key or settings.database_url).get_secret_value().encode(),
    )
    try:
        with get_client(target) as client:
            assert client.get(OPENAPI_PATH).json() == DOCUMENT
        target.requests = target.order_successes = 0
        yield
        assert target.requests > 0, "schemathesis sent nothing"
    finally:
        shutdown_lifespans()
        target.app = None
        target.pages = None


def as_a_client_would(case: schemathesis.Case) -> None:
    """Give a schema-valid case the two values no schema can describe, as a real client has
    them: a page cursor the app issued (any other is refused, by design), and a fresh
    idempotency key (one used before for another request is refused, by design). Cases
    made to be invalid there keep what they were made with."""
    query, headers, meta = case.query, case.headers, case.meta
    if query and "after" in query and (meta is None or not meta.is_negative_at("query")):  # type: ignore[arg-type]
        pages = target.pages
        assert pages is not None
        try:
            cancelled = pages.query.model_validate(query).cancelled
        except ValidationError:
            cancelled = None
        somewhere = OrderView(uuid.uuid4(), datetime.now(UTC), OrderStatus.CREATED, (), 1)
        query["after"] = pages.cursors.after(somewhere, "fuzzer", cancelled)
    if (
        headers
        and "Idempotency-Key" in headers
        and (
            meta is None or not meta.is_negative_at("header")  # type: ignore[arg-type]
        )
    ):
        headers["Idempotency-Key"] = uuid.uuid4().hex


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # One app (and database) per operation, shared by its examples, as a real server would be.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
@pytest.mark.usefixtures("served_app")
def test_every_operation_conforms_to_the_document(case: schemathesis.Case) -> None:
    as_a_client_would(case)
    case.call_and_validate()


def empty_database(database_url: str) -> None:
    """TRUNCATE, in a thread and event loop of its own, leaving the test session's alone."""

    async def truncate() -> None:
        connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
        try:
            await connection.execute("TRUNCATE orders CASCADE")
        finally:
            await connection.close()

    with ThreadPoolExecutor(1) as worker:
        worker.submit(asyncio.run, truncate()).result()


@pytest.mark.usefixtures("served_app")
def test_order_workflows_conform_to_the_document(clean_database: str) -> None:
    # Chains of calls following the document's links: place an order, then read, change,
    # pay, cancel or delete it, with the same checks on every step.
    class OrderWorkflows(schema.as_state_machine()):
        def before_call(self, case: schemathesis.Case) -> None:
            as_a_client_would(case)

        def setup(self) -> None:
            # The same choices must meet the same state, or Hypothesis cannot replay them.
            empty_database(clean_database)

    OrderWorkflows.run(
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=6,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # The links were followed: orders placed in a workflow were read, changed or deleted.
    assert target.order_successes > 0
