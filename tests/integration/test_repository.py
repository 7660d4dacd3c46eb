"""The repository, views and unit of work against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from orders.adapters.repository import SqlOrderViews, list_page
from orders.adapters.unit_of_work import SqlUnitOfWork
from orders.domain import Action, Order, OrderItem, OrderStatus, Pending, RefundStatus, Size
from tests.support import count_statements

LEASE = timedelta(seconds=60)


def new_order(owner: str = "alice", items: int = 2, created: datetime | None = None) -> Order:
    return Order.place(
        uuid.uuid4(),
        owner,
        tuple(OrderItem(f"coffee {n}", Size.MEDIUM, n + 1) for n in range(items)),
        created or datetime.now(UTC),
    )


async def add(engine: AsyncEngine, *orders: Order) -> None:
    async with SqlUnitOfWork(engine) as uow:
        for order in orders:
            await uow.orders.add(order)
        await uow.commit()


async def load(engine: AsyncEngine, order: Order) -> Order:
    async with SqlUnitOfWork(engine) as uow:
        found = await uow.orders.get(order.id, order.owner)
    assert found is not None
    return found


async def change(engine: AsyncEngine, order: Order, how: Callable[[Order], object]) -> Order:
    async with SqlUnitOfWork(engine) as uow:
        loaded = await uow.orders.get(order.id, order.owner, for_update=True)
        assert loaded is not None
        how(loaded)
        await uow.orders.save(loaded)
        await uow.commit()
    return loaded


async def outbox(engine: AsyncEngine) -> list[dict[str, object]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT order_id, sequence, type, body FROM outbox ORDER BY position")
        )
        return [dict(row._mapping) for row in rows]


def kinds(statements: list[str]) -> list[str]:
    return sorted(statement.split(None, 1)[0].rstrip(";").upper() for statement in statements)


async def test_an_added_order_reads_back_equal(engine: AsyncEngine) -> None:
    order = new_order()
    await add(engine, order)

    found = await load(engine, order)

    assert (found.id, found.owner, found.status, found.items) == (
        order.id,
        order.owner,
        OrderStatus.CREATED,
        order.items,
    )
    assert found.version == 1
    assert found.created == order.created


async def test_nothing_is_kept_without_commit(engine: AsyncEngine) -> None:
    order = new_order()
    async with SqlUnitOfWork(engine) as uow:
        await uow.orders.add(order)

    assert await SqlOrderViews(engine).get(order.id, "alice") is None
    assert await outbox(engine) == []


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
    assert [order.id for order in await views.list("alice", limit=10)] == [mine.id]
    async with SqlUnitOfWork(engine) as uow:
        assert await uow.orders.get(theirs.id, "alice", for_update=True) is None


async def test_list_is_newest_first_and_ties_break_by_id(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    older = new_order(created=now - timedelta(seconds=1))
    tied = sorted((new_order(created=now) for _ in range(3)), key=lambda o: o.id, reverse=True)
    await add(engine, older, *tied)

    views = SqlOrderViews(engine)
    listed = await views.list("alice", limit=10)
    # A page after the first tied order continues with the other two, then the older one.
    after = await views.list("alice", limit=10, after=(now, tied[0].id))

    assert [order.id for order in listed] == [*(o.id for o in tied), older.id]
    assert [order.id for order in after] == [tied[1].id, tied[2].id, older.id]


async def test_reading_one_order_is_one_statement(engine: AsyncEngine) -> None:
    order = new_order(items=5)
    await add(engine, order)
    views = SqlOrderViews(engine)
    await views.get(order.id, "alice")  # the connection's first use sets it up

    async with count_statements(engine) as statements:
        await views.get(order.id, "alice")

    # One SELECT and nothing else: no BEGIN/ROLLBACK around a read.
    assert kinds(statements) == ["SELECT"]


@pytest.mark.parametrize("after", [False, True])
async def test_listing_a_page_is_one_statement(engine: AsyncEngine, after: bool) -> None:
    orders = [new_order(items=3) for _ in range(25)]
    await add(engine, *orders)
    views = SqlOrderViews(engine)
    newest = max(orders, key=lambda o: (o.created, o.id))
    position = (newest.created, newest.id) if after else None
    await views.list("alice", limit=10, after=position)

    async with count_statements(engine) as statements:
        listed = await views.list("alice", limit=10, after=position)

    assert len(listed) == 10
    assert (newest.id in [order.id for order in listed]) is not after
    assert all(len(order.items) == 3 for order in listed)
    assert kinds(statements) == ["SELECT"]


@pytest.mark.parametrize("cancelled", [True, False])
async def test_the_list_filters_cancelled_orders(engine: AsyncEngine, cancelled: bool) -> None:
    kept, gone = new_order(), new_order()
    gone.status = OrderStatus.CANCELLED
    await add(engine, kept)
    async with SqlUnitOfWork(engine) as uow:
        await uow.orders.add(gone)
        await uow.commit()
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE orders SET status = 'cancelled' WHERE id = :id"), {"id": gone.id}
        )

    listed = await SqlOrderViews(engine).list("alice", limit=10, cancelled=cancelled)

    assert [order.id for order in listed] == [gone.id if cancelled else kept.id]


async def test_placing_an_order_is_one_insert_in_one_transaction(engine: AsyncEngine) -> None:
    await add(engine, new_order())  # the connection's first use sets it up

    async with count_statements(engine) as statements:
        await add(engine, new_order(items=7))

    assert kinds(statements) == ["BEGIN", "COMMIT", "WITH"]
    assert any(statement.lstrip().startswith("WITH new_order AS") for statement in statements)


async def test_events_are_written_with_their_change(engine: AsyncEngine) -> None:
    order = new_order(items=1)
    await add(engine, order)
    async with SqlUnitOfWork(engine) as uow:
        loaded = await uow.orders.get(order.id, "alice", for_update=True)
        assert loaded is not None
        loaded.replace_items((OrderItem("tea", Size.SMALL),), datetime.now(UTC))
        await uow.orders.save(loaded)
        await uow.commit()
    async with SqlUnitOfWork(engine) as uow:
        loaded = await uow.orders.get(order.id, "alice", for_update=True)
        assert loaded is not None
        loaded.delete(datetime.now(UTC))
        await uow.orders.delete(loaded)
        await uow.commit()

    events = await outbox(engine)

    assert [(event["sequence"], event["type"]) for event in events] == [
        (1, "order.placed"),
        (2, "order.updated"),
        (3, "order.deleted"),
    ]
    updated = events[1]["body"]
    assert isinstance(updated, dict)
    assert updated["order"]["order"] == [{"product": "tea", "size": "small", "quantity": 1}]
    assert updated["order_id"] == str(order.id)
    assert events[2]["body"]["order"] is None  # type: ignore[index]
    json.dumps(events[0]["body"])


async def test_an_event_is_never_written_without_its_change(engine: AsyncEngine) -> None:
    order = new_order()
    await add(engine, order)
    async with SqlUnitOfWork(engine) as uow:
        loaded = await uow.orders.get(order.id, "alice", for_update=True)
        assert loaded is not None
        loaded.replace_items((OrderItem("tea", Size.SMALL),), datetime.now(UTC))
        await uow.orders.save(loaded)
        # no commit

    assert [event["type"] for event in await outbox(engine)] == ["order.placed"]
    assert (await load(engine, order)).items == order.items


async def test_items_keep_their_order(engine: AsyncEngine) -> None:
    order = new_order(items=12)
    await add(engine, order)

    assert (await load(engine, order)).items == order.items
    view = await SqlOrderViews(engine).get(order.id, "alice")
    assert view is not None
    assert view.items == order.items


async def test_the_whole_lifecycle_state_round_trips(engine: AsyncEngine) -> None:
    order = new_order()
    await add(engine, order)
    now = datetime.now(UTC)
    token = uuid.uuid4()
    async with SqlUnitOfWork(engine) as uow:
        loaded = await uow.orders.get(order.id, "alice", for_update=True)
        assert loaded is not None
        loaded.take(Action.PAY, token, now, LEASE)
        loaded.record_charge(uuid.uuid4(), now)
        loaded.record_schedule("s-1", now)
        loaded.release(token, now)
        cancel = uuid.uuid4()
        loaded.take(Action.CANCEL, cancel, now, LEASE)
        loaded.cancel(cancel, now)
        await uow.orders.save(loaded)
        await uow.commit()

    found = await load(engine, order)

    assert found.status is OrderStatus.CANCELLED
    assert found.refund is RefundStatus.OWED
    assert found.pending == {Pending.REFUND}
    assert found.claim == loaded.claim
    assert found.due == loaded.due
    assert (found.payment_id, found.schedule_id) == (loaded.payment_id, "s-1")
    assert found.version == loaded.version == 4


async def test_a_lock_for_update_waits_for_the_holder(engine: AsyncEngine) -> None:
    order = new_order()
    await add(engine, order)
    async with SqlUnitOfWork(engine) as first:
        assert await first.orders.get(order.id, "alice", for_update=True) is not None

        async def second() -> None:
            async with SqlUnitOfWork(engine) as uow:
                await uow.orders.get(order.id, "alice", for_update=True)

        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await first.commit()
    await waiting


async def test_due_orders_are_shared_without_overlap(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    orders = [new_order() for _ in range(4)]
    await add(engine, *orders, new_order())
    for order in orders:
        await change(
            engine, order, lambda o: o.take(Action.PAY, uuid.uuid4(), now - 2 * LEASE, LEASE)
        )

    async with SqlUnitOfWork(engine) as first, SqlUnitOfWork(engine) as second:
        mine = await first.orders.due(now, 3)
        theirs = await second.orders.due(now, 3)

    assert len(mine) == 3
    assert len(theirs) == 1
    assert {order.id for order in mine} | {order.id for order in theirs} == {
        order.id for order in orders
    }
    assert all(order.items for order in mine)


async def test_pending_outcomes_are_counted_with_the_oldest(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    charging = new_order()
    await add(engine, charging, new_order())
    await change(
        engine,
        charging,
        lambda o: o.take(Action.PAY, uuid.uuid4(), now - timedelta(seconds=30), LEASE),
    )

    counts = {count.pending: count for count in await SqlOrderViews(engine).pending()}

    assert counts[Pending.CHARGE].count == 1
    assert counts[Pending.CHARGE].oldest == now - timedelta(seconds=30)
    assert counts[Pending.SCHEDULE].count == counts[Pending.REFUND].count == 0
    assert counts[Pending.REFUND].oldest is None


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE orders SET status = 'lost'",
        "UPDATE orders SET owner = ''",
        "UPDATE orders SET action = 'pay'",
        "UPDATE orders SET refund = 'owed'",
        "UPDATE orders SET refund = 'lost', payment_id = gen_random_uuid()",
        "UPDATE orders SET version = -1",
        "INSERT INTO outbox (id, order_id, sequence, type, occurred, body)"
        " VALUES (gen_random_uuid(), gen_random_uuid(), 1, 'order.lost', now(), '{}')",
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


@pytest.mark.parametrize("cancelled", [None, True, False])
async def test_a_page_deep_in_a_history_is_a_range_of_the_owner_index(
    engine: AsyncEngine, cancelled: bool | None
) -> None:
    # Enough rows of other owners that the planner prefers the index when it can use it.
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO orders (id, owner, created, status, version)"
                " SELECT gen_random_uuid(), 'owner-' || (n % 500), now() - n * interval '1 s',"
                " 'created', 1 FROM generate_series(1, 20000) AS n"
            )
        )
        await connection.execute(text("ANALYZE orders"))
        plan = await connection.execute(
            text(
                "EXPLAIN "
                + list_page(cancelled, after=True)
                .replace("$1", "'owner-7'")
                .replace("$2", "10")
                .replace("$3", "now()")
                .replace("$4", "gen_random_uuid()")
            )
        )
    lines = "\n".join(row[0] for row in plan)

    # The index is read from the cursor on (never from the newest order): a page costs the
    # same however deep in a history it is.
    assert "ix_orders_owner_created" in lines, lines
    bounds = [line for line in lines.splitlines() if "Index Cond: ((owner" in line]
    assert len(bounds) == 1, lines
    assert "created <=" in bounds[0], lines
