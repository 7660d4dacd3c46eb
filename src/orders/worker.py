"""The event worker: the outbox relay and the status consumer without the HTTP API.

    python -m orders.worker                 # both
    python -m orders.worker --relay         # publish the outbox only
    python -m orders.worker --consumer      # apply kitchen's and delivery's news only

The API process runs both already (BROKER_URL set, RELAY_ENABLED and CONSUMER_ENABLED true);
this command is for deployments that scale them apart from the API, from the same image, with
those two off on the API. Any number may run at once. It reads DATABASE_URL, BROKER_URL and
the other `EventSettings`, and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from functools import partial
from typing import Literal

from orders.adapters.database import make_engine
from orders.adapters.events import build_workers
from orders.adapters.unit_of_work import SqlUnitOfWork
from orders.logs import configure_logging
from orders.service.status import StatusService
from orders.settings import ConfigurationError, EventSettings

logger = logging.getLogger("orders.worker")


class WorkerSettings(EventSettings):
    """The event settings and how to log (the same LOG_LEVEL and LOG_FORMAT as the API)."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"


async def run(settings: EventSettings, *, relay: bool, consumer: bool) -> None:
    """Run the workers until SIGTERM or SIGINT."""
    engine = make_engine(settings)
    workers = build_workers(
        engine,
        StatusService(partial(SqlUnitOfWork, engine)),
        settings,
        relay=relay,
        consumer=consumer,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    workers.start()
    logger.info(
        "event worker started (relay: %s, consumer: %s)",
        "on" if workers.relay else "off",
        "on" if workers.consumer else "off",
    )
    try:
        await stop.wait()
    finally:
        await workers.stop()
        await engine.dispose()
        logger.info("event worker stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orders.worker", description=__doc__)
    parser.add_argument("--relay", action="store_true", help="run the outbox relay")
    parser.add_argument("--consumer", action="store_true", help="run the status consumer")
    args = parser.parse_args(argv)
    both = not (args.relay or args.consumer)
    try:
        settings = WorkerSettings.load()
    except ConfigurationError as error:
        print(f"orders worker: {error}", file=sys.stderr)
        return 2
    if settings.broker_url is None:
        print("orders worker: invalid configuration: BROKER_URL is not set", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(run(settings, relay=both or args.relay, consumer=both or args.consumer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
