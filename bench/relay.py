"""The outbox relay under load: how fast it publishes, and how far behind it falls.

    .venv/bin/python bench/relay.py drain --events 20000
        A scratch database with that many unpublished events (one `order.placed` per order,
        bodies as the service writes them); one relay (`python -m orders.worker --relay`)
        publishes them all: events per second, from start to the last one marked.

    .venv/bin/python bench/relay.py watch
        Samples the outbox of the bench's database (`orders_bench_*`, the newest) every half
        second while `bench/run.py` runs with BROKER_URL set: events written and published per
        second, and the lag (age of the oldest unpublished event), until interrupted or
        the benchmark's database goes away.

Both need DATABASE_URL's server (default 127.0.0.1:5432) and BROKER_URL (default the local
RabbitMQ's `/` virtual host); drain publishes to that broker's `orders` exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

import scratchdb

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/"

# One placed event per order, with the body the repository writes (service/documents.py).
FILL = """
INSERT INTO outbox (id, order_id, sequence, type, occurred, body)
SELECT event_id, order_id, 1, 'order.placed', now(), jsonb_build_object(
    'id', event_id, 'type', 'order.placed', 'occurred', now(), 'order_id', order_id,
    'sequence', 1, 'order', jsonb_build_object(
        'id', order_id, 'created', now(), 'status', 'created',
        'order', jsonb_build_array(jsonb_build_object(
            'product', 'latte', 'size', 'big', 'quantity', 2))))
FROM (SELECT gen_random_uuid() AS event_id, gen_random_uuid() AS order_id
      FROM generate_series(1, $1)) AS fresh"""
LAG = """
SELECT count(*) FILTER (WHERE published IS NULL),
       count(*),
       coalesce(extract(epoch FROM now() - min(occurred) FILTER (WHERE published IS NULL)), 0)
FROM outbox"""


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _drain(database_url: str, broker: str, events: int) -> None:
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        await connection.execute(FILL, events)
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "BROKER_URL": broker,
            "LOG_LEVEL": "WARNING",
        }
        started = time.perf_counter()
        relay = subprocess.Popen(  # noqa: ASYNC220 (started once, before the timing loop)
            [sys.executable, "-m", "orders.worker", "--relay"], cwd=ROOT, env=env
        )
        try:
            waiting = "SELECT count(*) FROM outbox WHERE published IS NULL"
            while await connection.fetchval(waiting):  # noqa: ASYNC110 (polls the database)
                await asyncio.sleep(0.1)
            elapsed = time.perf_counter() - started
        finally:
            relay.terminate()
            relay.wait(timeout=20)
    finally:
        await connection.close()
    print(
        f"relay: {events} events published in {elapsed:.2f} s: {events / elapsed:.0f} events/s"
        " (one relay process, batch 200, including its start-up)"
    )


async def _watch(server_url: str) -> None:
    admin = await asyncpg.connect(_dsn(server_url))
    try:
        while True:
            name = await admin.fetchval(
                "SELECT datname FROM pg_database WHERE datname LIKE 'orders_bench_%'"
                " ORDER BY oid DESC LIMIT 1"
            )
            if name:
                break
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    print(f"watching the outbox of {name}")
    base = server_url.rsplit("/", 1)[0]
    connection = await asyncpg.connect(_dsn(f"{base}/{name}"))
    samples: list[tuple[float, int, int, float]] = []
    try:
        while True:
            try:
                waiting, total, lag = await connection.fetchrow(LAG)
            except asyncpg.UndefinedTableError:
                # Not migrated yet.
                await asyncio.sleep(0.5)
                continue
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                break
            samples.append((time.perf_counter(), waiting, total, float(lag)))
            await asyncio.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if not connection.is_closed():
            await connection.close()
    busy = [s for s in samples if s[2] > samples[0][2]]
    if len(busy) < 2:
        print("no events were written while watching")
        return
    first, last = busy[0], busy[-1]
    seconds = last[0] - first[0]
    written = last[2] - first[2]
    published = written - (last[1] - first[1])
    lags = sorted(s[3] for s in busy)
    print(
        f"over {seconds:.0f} s: {written / seconds:.0f} events/s written, "
        f"{published / seconds:.0f} events/s published; outbox lag median "
        f"{lags[len(lags) // 2]:.2f} s, p95 {lags[int(len(lags) * 0.95)]:.2f} s, "
        f"max {lags[-1]:.2f} s; waiting at most {max(s[1] for s in busy)} events"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/relay.py", description=__doc__)
    parser.add_argument("mode", choices=["drain", "watch"])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE)
    broker = os.environ.get("BROKER_URL", DEFAULT_BROKER)
    if args.mode == "watch":
        asyncio.run(_watch(server_url))
        return 0
    name = f"orders_relay_{os.getpid()}"
    with (
        scratchdb.postgres_server(server_url, embedded=False) as server,
        scratchdb.scratch_database(server, name, keep=False) as url,
    ):
        scratchdb.migrate(url)
        asyncio.run(_drain(url, broker, args.events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
