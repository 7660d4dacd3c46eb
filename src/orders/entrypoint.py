"""The container's entrypoint: wait for the database, migrate it, then become the server.

    python -m orders.entrypoint                  # wait, `alembic upgrade head`, exec uvicorn
    python -m orders.entrypoint --workers 2      # the same, with extra uvicorn options
    python -m orders.entrypoint alembic current  # any other command runs as given, nothing first

The server replaces this process (`os.execvp`), so in a container uvicorn is PID 1 and
receives SIGTERM itself. Until then SIGTERM and SIGINT end this process at once (exit 143
and 130) with a log line, so stopping a container that waits for its database is prompt.
Several replicas may start at once: `alembic/env.py` holds a PostgreSQL advisory lock while
migrating, so exactly one of them applies the migrations.

uvicorn runs with the HTTP limits of `ServerLimits` (`HTTP_*` settings): the httptools
protocol guarded by `orders.httpguard` (header size, header count, header-read timeout),
the keep-alive timeout and the concurrency limit.

Its own switches are `StartupSettings`, read like the service's settings:

- `MIGRATE_ON_START` (default `true`): `false` skips the wait and the migration, for
  deployments that migrate in a separate job; the server then starts at once and
  `/health/ready` answers 503 until the database answers.
- `DB_WAIT_SECONDS` (default 60): how long to wait for the database to accept connections.
- `UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN` (default 20): seconds in-flight requests get to finish
  after SIGTERM; keep it below the orchestrator's grace period.

It migrates with the Alembic configuration of the service's `ALEMBIC_CONFIG` (default
`pyproject.toml`), the one whose head readiness expects.

uvicorn reads its other options from `UVICORN_*` variables and `WEB_CONCURRENCY` (workers).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

# Only the server path needs pydantic, SQLAlchemy and Alembic: they are imported where used,
# so that a one-off command (`IMAGE alembic current`, the stand-ins) starts without that cost.
if TYPE_CHECKING:
    from orders.settings import DatabaseSettings, ServerLimits, StartupSettings

logger = logging.getLogger("orders.entrypoint")

APP_FACTORY = "orders.app:create_app"
HTTP_PROTOCOL = "orders.httpguard:GuardedHttpToolsProtocol"
WAIT_INTERVAL_SECONDS = 1.0
# While waiting, repeat an unchanged reason only this often, so the log stays readable.
WAIT_LOG_EVERY_SECONDS = 10.0

Probe = Callable[[], Awaitable[None]]


class StartupError(Exception):
    """Start-up cannot go on; the message is one line for the log."""


class DatabaseUnavailable(StartupError):
    """The database did not accept connections in time, or refused us for good."""


def server_command(
    extra: Sequence[str], startup: StartupSettings, limits: ServerLimits
) -> list[str]:
    """The uvicorn command line: the app factory, our fixed choices, then `extra` options.

    Access logging is off because the app logs every request itself (with its request id).
    `--lifespan on` makes a failing start-up stop the process instead of being ignored.
    """
    return [
        "uvicorn",
        "--factory",
        APP_FACTORY,
        "--lifespan",
        "on",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        str(startup.uvicorn_timeout_graceful_shutdown),
        *server_limit_options(limits),
        *extra,
    ]


def server_limit_options(limits: ServerLimits) -> list[str]:
    """uvicorn options for the HTTP limits: the guarded protocol and uvicorn's own bounds."""
    return [
        "--http",
        HTTP_PROTOCOL,
        "--timeout-keep-alive",
        str(limits.http_keep_alive_seconds),
        "--limit-concurrency",
        str(limits.http_limit_concurrency),
    ]


def is_server(argv: Sequence[str]) -> bool:
    """No arguments, or only options (`--workers 2`), mean "run the server"."""
    return not argv or argv[0].startswith("-")


def describe_error(error: BaseException) -> str:
    """One line saying why a connection failed, without SQLAlchemy's boilerplate."""
    orig = getattr(error, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's error
    if orig is not None:
        return str(orig).splitlines()[0]
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def wait_for_database(
    probe: Probe,
    *,
    give_up_after: float,
    where: str,
    interval: float = WAIT_INTERVAL_SECONDS,
) -> float:
    """Call `probe` until it succeeds; return the seconds it took.

    Raises DatabaseUnavailable after `give_up_after` seconds, or at once when the database
    refuses us for a reason that waiting cannot fix (wrong password, no such database).
    """
    from orders.adapters.database import Outage, outage

    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + give_up_after
    last_reason: str | None = None
    last_logged = -WAIT_LOG_EVERY_SECONDS
    while True:
        try:
            await probe()
        except Exception as error:
            reason = describe_error(error)
            if outage(error) is Outage.REFUSED:
                raise DatabaseUnavailable(f"the database at {where} refused us: {reason}") from None
            now = loop.time()
            if now >= deadline:
                raise DatabaseUnavailable(
                    f"the database at {where} did not accept connections within "
                    f"{give_up_after:g} s (last error: {reason})"
                ) from None
            if reason != last_reason or now - last_logged >= WAIT_LOG_EVERY_SECONDS:
                logger.info(
                    "waiting for the database at %s (%.0f s left): %s",
                    where,
                    deadline - now,
                    reason,
                )
                last_reason, last_logged = reason, now
            await asyncio.sleep(min(interval, max(deadline - now, 0.0)))
        else:
            return loop.time() - started


def database_probe(settings: DatabaseSettings) -> Probe:
    """A probe that opens one connection the way the app does and runs `SELECT 1`."""

    from orders.adapters.database import make_engine, ping

    async def probe() -> None:
        engine = make_engine(settings)
        try:
            await ping(engine, settings.db_connect_timeout + 1.0)
        finally:
            await engine.dispose()

    return probe


def database_location(settings: DatabaseSettings) -> str:
    """host:port/name of the database, for log lines; never the password."""
    url = settings.sqlalchemy_url
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def migrate(config_file: Path) -> None:
    """`alembic upgrade head` in this process, with the config in `config_file`."""
    from alembic import command
    from alembic.config import Config

    if not config_file.is_file():
        raise StartupError(f"no Alembic configuration: {config_file} does not exist")
    command.upgrade(Config(toml_file=str(config_file)), "head")


def _route_alembic_logs() -> None:
    # Alembic's "Running upgrade ..." lines go through the same handler (text or JSON) as ours.
    ours = logging.getLogger("orders")
    alembic_logger = logging.getLogger("alembic")
    alembic_logger.handlers = list(ours.handlers)
    alembic_logger.setLevel(logging.INFO)
    alembic_logger.propagate = False
    # Its plugin set-up lines say nothing about this database.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def prepare_server(
    startup: StartupSettings,
    *,
    probe: Callable[[DatabaseSettings], Probe] | None = None,
    run_migrations: Callable[[Path], None] | None = None,
) -> None:
    """Everything that happens before the server starts: settings, wait, migration.

    The service's settings come from the process environment, as the server reads them;
    `startup` holds this module's own switches. Raises StartupError or ConfigurationError
    with a one-line reason.
    """
    from orders.logs import configure_logging
    from orders.settings import Settings

    probe = probe or database_probe
    run_migrations = run_migrations or migrate
    # Validated here, before any waiting, so a typo fails in a second and not after a minute.
    settings = Settings.load()
    configure_logging(settings.log_level, settings.log_format)
    _route_alembic_logs()
    if not startup.migrate_on_start:
        logger.info("MIGRATE_ON_START=false: not migrating; starting the server")
        return
    where = database_location(settings)
    waited = asyncio.run(
        wait_for_database(probe(settings), give_up_after=startup.db_wait_seconds, where=where)
    )
    logger.info("the database at %s accepts connections (after %.1f s)", where, waited)
    config_file = settings.alembic_config
    logger.info("migrating: alembic upgrade head (%s)", config_file)
    started = time.monotonic()
    run_migrations(config_file)
    logger.info("migrations done in %.1f s", time.monotonic() - started)


def _stop_now(signum: int, frame: FrameType | None) -> None:
    """Until the server runs, a stop request ends this process at once.

    Nothing here needs unwinding: a connection attempt or a migration cut short leaves
    nothing behind (PostgreSQL rolls back and releases the migration lock when the
    connection drops), and a clean unwind could wait on a DNS lookup in a thread.
    """
    name = signal.Signals(signum).name
    logger.warning("%s received before the server started: stopping", name)
    for handler in logging.getLogger("orders").handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def handle_stop_signals() -> Callable[[], None]:
    """SIGTERM and SIGINT end start-up promptly (exit 143 and 130); exec resets them.

    Returns what puts the previous handlers back, for when this process does not exec.
    """
    previous = {sig: signal.signal(sig, _stop_now) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server (after migrating) or the given command; return only on failure."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not is_server(args):
        return _exec(args)
    from orders.settings import ConfigurationError, ServerLimits, StartupSettings

    # As PID 1 nothing would handle them otherwise: the kernel drops signals PID 1 has no
    # handler for, and `docker stop` would wait out its grace period and then kill us.
    restore = handle_stop_signals()
    try:
        try:
            startup = StartupSettings.load()
            command = server_command(args, startup, ServerLimits.load())
            prepare_server(startup)
        except (StartupError, ConfigurationError) as error:
            print(f"orders: {error}", file=sys.stderr)
            return 1
        logger.info("starting: %s", " ".join(command))
        return _exec(command)
    finally:
        # Reached only when there was no exec (it replaces the process, handlers and all).
        restore()


def _exec(command: list[str]) -> int:
    # Flush before the process image is replaced, or buffered lines are lost.
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # Replace this process (no shell, no child): the command gets our PID and our signals.
        os.execvp(command[0], command)  # noqa: S606
    except OSError as error:
        print(f"orders: cannot run {command[0]!r}: {error.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
