"""The repository, views and unit of work against a real PostgreSQL."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from orders.adapters.repository import SqlOrderViews
from orders.adapters.unit_of_work import SqlUnitOfWork
from orders.domain import Action, Order, OrderItem, OrderStatus, Size
from orders.domain.model import ALLOWED_FROM
from tests.support import count_statements

LEASE = timedelta(seconds=60)


def new_order(owner: str = "alice", items: int = 2, created: datetime | None = None) -> Order:
    return Order(
        id=uuid.uuid4(),
        owner=owner,
        created=created or datetime.now(UTC),
        status=OrderStatus.CREATED,
        items=tuple(OrderItem(f"coffee {n}", Size.MEDIUM, n + 1) for n in range(items)),
    )


async def add(engine: AsyncEngine, *orders: Order) -> None:
    async with SqlUnitOfWork(engine) as uow:
        for order in orders:
            await uow.orders.add(order)
        await uow.commit()


async def test_an_added_order_reads_back_equal(engine: AsyncEngine) -> None:
    order = new_order(items=3)
    await add(engine, order)

    assert await SqlOrderViews(engine).get(order.id, "alice") == order


async def test_nothing_is_kept_without_commit(engine: AsyncEngine) -> None:
    order = new_order()
    async with SqlUnitOfWork(engine) as uow:
        await uow.orders.add(order)

    assert await SqlOrderViews(engine).get(order.id, "alice") is None


async def test_an_error_rolls_the_unit_of_work_back(engine: AsyncEngine) -> None:
    order = new_order()
    with pytest.raises(RuntimeError):
        async with SqlUnitOfWork(engine) as uow:
            await uow.orders.add(order)
            raise RuntimeError("boom")

    assert await SqlOrderViews(engine).get(order.id, "alice") is None


async def test_orders_are_scoped_by_owner(engine: AsyncEngine) -> None:
    mine, theirs = new_order("alice"), new_order("bob")
    await add(engine, mine, theirs)
    views = SqlOrderViews(engine)

    assert await views.get(theirs.id, "alice") is None
    assert [order.id for order in await views.list("alice")] == [mine.id]
    async with SqlUnitOfWork(engine) as uow:
        assert await uow.orders.get(theirs.id, "alice") is None
        assert not await uow.orders.delete(theirs.id, "alice", ALLOWED_FROM[Action.DELETE])
        await uow.commit()
    assert await views.get(theirs.id, "bob") == theirs


async def test_list_is_newest_first_and_ties_break_by_id(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    same_time = [new_order(created=now) for _ in range(3)]
    older = new_order(created=now - timedelta(minutes=1))
    await add(engine, older, *same_time)

    listed = await SqlOrderViews(engine).list("alice")

    expected = [*sorted(same_time, key=lambda order: order.id, reverse=True), older]
    assert [order.id for order in listed] == [order.id for order in expected]


def kinds(statements: list[str]) -> list[str]:
    """The first word of each statement that reached the server, sorted: asyncpg reports the
    statements it sends itself a moment later than SQLAlchemy reports its own."""
    return sorted(statement.split(None, 1)[0].upper().rstrip(";") for statement in statements)


async def test_reading_one_order_is_one_statement(engine: AsyncEngine) -> None:
    order = new_order(items=5)
    await add(engine, order)
    views = SqlOrderViews(engine)
    await views.get(order.id, "alice")  # the connection's first use sets it up

    async with count_statements(engine) as statements:
        await views.get(order.id, "alice")

    # One SELECT and nothing else: no BEGIN/ROLLBACK around a read.
    assert kinds(statements) == ["SELECT"]


@pytest.mark.parametrize("limit", [None, 10])
async def test_listing_n_orders_is_one_statement(engine: AsyncEngine, limit: int | None) -> None:
    await add(engine, *(new_order(items=3) for _ in range(20)))
    views = SqlOrderViews(engine)
    await views.list("alice", limit=limit)

    async with count_statements(engine) as statements:
        listed = await views.list("alice", limit=limit)

    assert len(listed) == (limit or 20)
    assert all(len(order.items) == 3 for order in listed)
    assert kinds(statements) == ["SELECT"]


async def test_placing_an_order_is_one_insert_in_one_transaction(engine: AsyncEngine) -> None:
    await add(engine, new_order())  # the connection's first use sets it up

    async with count_statements(engine) as statements:
        await add(engine, new_order(items=7))

    assert kinds(statements) == ["BEGIN", "COMMIT", "WITH"]
    assert any(statement.lstrip().startswith("WITH new_order AS") for statement in statements)


async def test_items_keep_their_order(engine: AsyncEngine) -> None:
    order = new_order(items=12)
    await add(engine, order)

    read = await SqlOrderViews(engine).get(order.id, "alice")

    assert read is not None
    assert [item.product for item in read.items] == [item.product for item in order.items]


async def test_a_claim_excludes_other_claims_until_released(engine: AsyncEngine) -> None:
    order = new_order()
    await add(engine, order)
    first, second = uuid.uuid4(), uuid.uuid4()
    allowed = ALLOWED_FROM[Action.PAY]

    async with SqlUnitOfWork(engine) as uow:
        claimed = await uow.orders.claim(order.id, "alice", Action.PAY, allowed, first, LEASE)
        again = await uow.orders.claim(order.id, "alice", Action.PAY, allowed, second, LEASE)
        await uow.commit()
    # Claimed to pay from `created`: a charge is about to be asked for, so it is pending.
    assert claimed == dataclasses.replace(order, charge_pending=True)
    assert again is None

    async with SqlUnitOfWork(engine) as uow:
        await uow.orders.release(order.id, first, uncharged=True)
        retaken = await uow.orders.claim(order.id, "alice", Action.PAY, allowed, second, LEASE)
        await uow.commit()
    assert retaken == dataclasses.replace(order, charge_pending=True)


async def test_a_pending_charge_blocks_every_write_but_paying(engine: AsyncEngine) -> None:
    order = new_order()
    await add(engine, order)
    token = uuid.uuid4()
    async with SqlUnitOfWork(engine) as uow:
        await uow.orders.claim(
            order.id, "alice", Action.PAY, ALLOWED_FROM[Action.PAY], token, LEASE
        )
        await uow.orders.release(order.id, token)  # outcome unknown: still pending
        await uow.commit()

    async with SqlUnitOfWork(engine) as uow:
        items = [OrderItem("tea", Size.SMALL)]
        update = ALLOWED_FROM[Action.UPDATE]
        assert await uow.orders.replace_items(order.id, "alice", items, update) is None
        assert not await uow.orders.delete(order.id, "alice", ALLOWED_FROM[Action.DELETE])
        cancel = ALLOWED_FROM[Action.CANCEL]
        assert (
            await uow.orders.claim(order.id, "alice", Action.CANCEL, cancel, token, LEASE) is None
        )
        paying = await uow.orders.claim(
            order.id, "alice", Action.PAY, ALLOWED_FROM[Action.PAY], token, LEASE
        )
        await uow.commit()
    assert paying is not None
    assert paying.charge_pending


async def test_an_expired_claim_can_be_taken_over(engine: AsyncEngine) -> None:
    order = new_order()
    await add(engine, order)
    stale, fresh = uuid.uuid4(), uuid.uuid4()
    allowed = ALLOWED_FROM[Action.PAY]

    async with SqlUnitOfWork(engine) as uow:
        await uow.orders.claim(order.id, "alice", Action.PAY, allowed, stale, -LEASE)
        taken = await uow.orders.claim(order.id, "alice", Action.PAY, allowed, fresh, LEASE)
        # The old holder can no longer settle: its token is gone.
        settled = await uow.orders.settle(order.id, stale, OrderStatus.PROGRESS, "s-1")
        await uow.commit()

    assert taken is not None
    assert settled is None


async def test_settle_moves_status_and_releases(engine: AsyncEngine) -> None:
    order = new_order()
    await add(engine, order)
    token, payment = uuid.uuid4(), uuid.uuid4()

    async with SqlUnitOfWork(engine) as uow:
        await uow.orders.claim(
            order.id, "alice", Action.PAY, ALLOWED_FROM[Action.PAY], token, LEASE
        )
        await uow.orders.record_payment(order.id, token, payment)
        settled = await uow.orders.settle(order.id, token, OrderStatus.PROGRESS, "sched-9")
        await uow.commit()

    assert settled is not None
    assert settled.status is OrderStatus.PROGRESS
    assert settled.payment_id == payment
    assert settled.schedule_id == "sched-9"
    assert settled.items == order.items
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT action, action_token, action_expires FROM orders WHERE id = :id"),
                {"id": order.id},
            )
        ).one()
    assert tuple(row) == (None, None, None)


async def test_guarded_writes_respect_status(engine: AsyncEngine) -> None:
    order = new_order()
    await add(engine, order)
    items = [OrderItem("tea", Size.SMALL)]

    async with SqlUnitOfWork(engine) as uow:
        refused = await uow.orders.replace_items(
            order.id, "alice", items, frozenset({OrderStatus.PAID})
        )
        replaced = await uow.orders.replace_items(
            order.id, "alice", items, ALLOWED_FROM[Action.UPDATE]
        )
        await uow.commit()

    assert refused is None
    assert replaced is not None
    assert replaced.items == tuple(items)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE orders SET status = 'lost'",
        "UPDATE orders SET owner = ''",
        "UPDATE orders SET action = 'pay'",
        "UPDATE order_items SET quantity = 0",
        "UPDATE order_items SET quantity = 1000001",
        "UPDATE order_items SET size = 'huge'",
        "UPDATE order_items SET product = ''",
        "INSERT INTO order_items (order_id, position, product, size)"
        " VALUES (gen_random_uuid(), 0, 'x', 'big')",
    ],
)
async def test_the_database_enforces_the_rules_too(engine: AsyncEngine, statement: str) -> None:
    await add(engine, new_order())

    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(text(statement))


async def test_deleting_an_order_deletes_its_items(engine: AsyncEngine) -> None:
    order = new_order(items=3)
    await add(engine, order)

    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM orders"))
        remaining = (await connection.execute(text("SELECT count(*) FROM order_items"))).scalar()

    assert remaining == 0
