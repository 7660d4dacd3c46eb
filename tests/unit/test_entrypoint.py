"""The container entrypoint: which command it execs, when it migrates, how long it waits.

`os.execvp` is replaced by a recorder, and the migration by a stand-in that notes its call;
no test here needs a database (the one probe that connects aims at a port nobody serves).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import asyncpg  # type: ignore[import-untyped]
import pytest

from orders import entrypoint
from orders.entrypoint import (
    DatabaseUnavailable,
    StartupError,
    database_location,
    database_probe,
    is_server,
    server_command,
    wait_for_database,
)
from orders.settings import ConfigurationError, DatabaseSettings, ServerLimits, StartupSettings

SERVICE_ENV = {
    "DATABASE_URL": "postgresql://orders:s3cret@db.internal:6543/orders",
    "JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nnot checked here\n-----END PUBLIC KEY-----",
    "JWT_AUDIENCE": "orders-test",
    "JWT_ISSUER": "https://issuer.test",
    "PAYMENTS_URL": "http://payments.test",
    "KITCHEN_URL": "http://kitchen.test",
}
ENTRYPOINT_VARS = (
    "MIGRATE_ON_START",
    "DB_WAIT_SECONDS",
    "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN",
    "ALEMBIC_CONFIG",
    "JWT_PUBLIC_KEY_FILE",
    "JWT_JWKS_URL",
    "LOG_LEVEL",
    "LOG_FORMAT",
)


class Execed(Exception):
    """Raised by the fake execvp: the process would have become `argv` here."""

    def __init__(self, file: str, argv: list[str]) -> None:
        super().__init__(file)
        self.file = file
        self.argv = argv


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_execvp(file: str, args: list[str]) -> NoReturn:
        raise Execed(file, list(args))

    monkeypatch.setattr(os, "execvp", fake_execvp)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A known environment, and the logging set-up the entrypoint changes put back after."""
    for name in (*SERVICE_ENV, *ENTRYPOINT_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "no-secrets-here"))
    saved = {
        name: (logger.handlers[:], logger.level, logger.propagate)
        for name in ("orders", "alembic", "alembic.runtime.plugins")
        for logger in [logging.getLogger(name)]
    }
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(level)


@pytest.fixture
def service_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SERVICE_ENV.items():
        monkeypatch.setenv(name, value)


class Recorder:
    """Stands in for the database probe and the migration; remembers what happened."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.config_files: list[Path] = []

    def probe(self, settings: DatabaseSettings) -> entrypoint.Probe:
        async def ready() -> None:
            self.events.append("probe")

        return ready

    def migrate(self, config_file: Path) -> None:
        self.events.append("migrate")
        self.config_files.append(config_file)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(entrypoint, "database_probe", recorder.probe)
    monkeypatch.setattr(entrypoint, "migrate", recorder.migrate)
    return recorder


def server_command_from_environment(extra: list[str]) -> list[str]:
    return server_command(extra, StartupSettings.load(), ServerLimits.load())


# --- which command runs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "server"),
    [
        ([], True),
        (["--workers", "2"], True),
        (["--log-level=debug"], True),
        (["alembic", "current"], False),
        (["python", "-m", "orders_dev.standins"], False),
        (["sh", "-c", "--not-an-option"], False),
    ],
)
def test_only_no_arguments_or_options_mean_the_server(argv: list[str], server: bool) -> None:
    assert is_server(argv) is server


def test_the_server_command_serves_the_factory_without_access_log() -> None:
    command = server_command_from_environment([])

    assert command[:3] == ["uvicorn", "--factory", "orders.app:create_app"]
    assert "--no-access-log" in command
    assert command[command.index("--lifespan") + 1] == "on"
    assert command[command.index("--timeout-graceful-shutdown") + 1] == "20"


def test_the_server_runs_with_the_http_limits() -> None:
    command = server_command_from_environment([])

    def option(name: str) -> str:
        return command[command.index(name) + 1]

    assert option("--http") == "orders.httpguard:GuardedHttpToolsProtocol"
    assert option("--timeout-keep-alive") == "5"
    assert option("--limit-concurrency") == "256"


def test_the_http_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_KEEP_ALIVE_SECONDS", "2")
    monkeypatch.setenv("HTTP_LIMIT_CONCURRENCY", "50")

    command = server_command_from_environment([])

    assert command[command.index("--timeout-keep-alive") + 1] == "2"
    assert command[command.index("--limit-concurrency") + 1] == "50"


def test_extra_options_come_last_so_they_win() -> None:
    command = server_command_from_environment(["--workers", "3", "--access-log"])

    assert command[-3:] == ["--workers", "3", "--access-log"]


def test_the_graceful_shutdown_timeout_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN", "7")

    command = server_command_from_environment([])

    assert command[command.index("--timeout-graceful-shutdown") + 1] == "7"


@pytest.mark.parametrize("value", ["soon", "-1", "2.5"])
def test_a_bad_graceful_shutdown_timeout_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN", value)

    with pytest.raises(ConfigurationError, match="UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN"):
        StartupSettings.load()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", True), ("true", True), ("1", True), ("YES", True), ("false", False), ("off", False)],
)
def test_migrate_on_start_reads_yes_and_no(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("MIGRATE_ON_START", value)

    assert StartupSettings.load().migrate_on_start is expected


def test_migrate_on_start_refuses_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATE_ON_START", "sometimes")

    with pytest.raises(ConfigurationError, match="MIGRATE_ON_START: Input should be a valid"):
        StartupSettings.load()


# --- main: what happens before the exec -----------------------------------------------------


@pytest.mark.usefixtures("execs")
def test_arguments_replace_the_server_and_nothing_runs_before(recorder: Recorder) -> None:
    # No settings at all: a one-off command must not need the service's configuration.
    with pytest.raises(Execed) as execed:
        entrypoint.main(["alembic", "current"])

    assert execed.value.file == "alembic"
    assert execed.value.argv == ["alembic", "current"]
    assert recorder.events == []


@pytest.mark.usefixtures("execs", "service_env")
def test_the_server_starts_after_waiting_and_migrating(recorder: Recorder) -> None:
    with pytest.raises(Execed) as execed:
        entrypoint.main([])

    assert recorder.events == ["probe", "migrate"]
    assert recorder.config_files == [Path("pyproject.toml")]
    assert execed.value.file == "uvicorn"
    assert execed.value.argv == server_command_from_environment([])


@pytest.mark.usefixtures("execs", "service_env")
def test_options_go_to_uvicorn_after_migrating(recorder: Recorder) -> None:
    with pytest.raises(Execed) as execed:
        entrypoint.main(["--workers", "2"])

    assert recorder.events == ["probe", "migrate"]
    assert execed.value.argv[-2:] == ["--workers", "2"]


@pytest.mark.usefixtures("execs", "service_env")
def test_alembic_config_can_be_elsewhere(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALEMBIC_CONFIG", "/etc/orders/pyproject.toml")

    with pytest.raises(Execed):
        entrypoint.main([])

    assert recorder.config_files == [Path("/etc/orders/pyproject.toml")]


@pytest.mark.usefixtures("execs", "service_env")
@pytest.mark.parametrize("value", ["false", "0", "no"])
def test_migrate_on_start_false_skips_the_wait_and_the_migration(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MIGRATE_ON_START", value)

    with pytest.raises(Execed) as execed:
        entrypoint.main([])

    assert recorder.events == []
    assert execed.value.file == "uvicorn"


@pytest.mark.usefixtures("execs")
def test_missing_settings_stop_before_any_waiting(
    recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    assert entrypoint.main([]) == 1

    assert recorder.events == []
    err = capsys.readouterr().err.strip()
    assert err.startswith("orders: invalid configuration: DATABASE_URL")
    assert "\n" not in err


@pytest.mark.usefixtures("execs", "service_env")
def test_a_bad_switch_stops_start_up_with_one_line(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MIGRATE_ON_START", "maybe")

    assert entrypoint.main([]) == 1

    assert recorder.events == []
    err = capsys.readouterr().err
    assert err.startswith("orders: invalid configuration: MIGRATE_ON_START: ")
    assert err.count("\n") == 1


@pytest.mark.usefixtures("service_env")
def test_a_database_that_never_answers_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def down(settings: DatabaseSettings) -> entrypoint.Probe:
        async def probe() -> None:
            raise ConnectionRefusedError(111, "Connect call failed")

        return probe

    migrations: list[Path] = []
    monkeypatch.setattr(entrypoint, "database_probe", down)
    monkeypatch.setattr(entrypoint, "migrate", migrations.append)
    monkeypatch.setenv("DB_WAIT_SECONDS", "0.2")

    assert entrypoint.main([]) == 1

    assert migrations == []
    assert "did not accept connections within 0.2 s" in capsys.readouterr().err


def test_one_off_commands_do_not_pay_for_the_server_imports() -> None:
    # `IMAGE alembic current` or the stand-ins start without SQLAlchemy or pydantic loaded.
    probe = (
        "import sys, orders.entrypoint; "
        "print(sorted({'sqlalchemy', 'pydantic', 'alembic'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_command_that_does_not_exist_exits_127(capsys: pytest.CaptureFixture[str]) -> None:
    assert entrypoint.main(["orders-no-such-command"]) == 127
    assert "cannot run 'orders-no-such-command'" in capsys.readouterr().err


# --- waiting for the database ---------------------------------------------------------------


async def test_waiting_retries_until_the_database_answers() -> None:
    attempts: list[float] = []

    async def probe() -> None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionRefusedError(111, "Connect call failed")

    waited = await wait_for_database(probe, give_up_after=5, where="db:5432/x", interval=0.01)

    assert len(attempts) == 3
    assert 0 <= waited < 5


async def test_waiting_is_bounded() -> None:
    attempts = 0

    async def probe() -> None:
        nonlocal attempts
        attempts += 1
        raise OSError("Name or service not known")

    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as raised:
        await wait_for_database(probe, give_up_after=0.3, where="db:5432/x", interval=0.05)

    assert time.monotonic() - started < 2
    assert attempts >= 2
    assert str(raised.value) == (
        "the database at db:5432/x did not accept connections within 0.3 s "
        "(last error: OSError: Name or service not known)"
    )


async def test_a_refusal_that_waiting_cannot_fix_stops_at_once() -> None:
    attempts = 0

    async def probe() -> None:
        nonlocal attempts
        attempts += 1
        raise asyncpg.InvalidPasswordError('password authentication failed for user "orders"')

    with pytest.raises(DatabaseUnavailable, match="password authentication failed"):
        await wait_for_database(probe, give_up_after=30, where="db:5432/x", interval=0.01)

    assert attempts == 1


async def test_a_probe_that_hangs_still_gives_up_in_time() -> None:
    async def probe() -> None:
        await asyncio.sleep(0.05)
        raise TimeoutError

    with pytest.raises(DatabaseUnavailable, match="last error: TimeoutError"):
        await wait_for_database(probe, give_up_after=0.2, where="db:5432/x", interval=0.01)


async def test_the_real_probe_reports_a_refused_connection() -> None:
    # A bound socket that never listens: connecting to it is refused at once, reliably.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        settings = DatabaseSettings(
            database_url=f"postgresql://orders@127.0.0.1:{port}/orders", db_connect_timeout=1
        )
        with pytest.raises(DatabaseUnavailable, match="ConnectionRefusedError"):
            await wait_for_database(
                database_probe(settings), give_up_after=0.3, where="here", interval=0.05
            )


def test_log_lines_name_the_database_but_never_the_password() -> None:
    settings = DatabaseSettings(database_url=SERVICE_ENV["DATABASE_URL"])

    assert database_location(settings) == "db.internal:6543/orders"


def test_migrate_without_a_configuration_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="does not exist"):
        entrypoint.migrate(tmp_path / "pyproject.toml")


# --- stop signals before the server runs ------------------------------------------------------


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_during_the_database_wait_ends_start_up_at_once(
    tmp_path: Path, signum: signal.Signals, status: int
) -> None:
    # A bound socket that never listens: the wait would go on for its whole minute.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        env = {
            **os.environ,
            **SERVICE_ENV,
            "DATABASE_URL": f"postgresql://orders@127.0.0.1:{port}/orders",
            "DB_WAIT_SECONDS": "60",
            "SECRETS_DIR": str(tmp_path / "no-secrets-here"),
        }
        with subprocess.Popen(
            [sys.executable, "-m", "orders.entrypoint"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stderr is not None
            lines = []
            for line in process.stderr:
                lines.append(line)
                if "waiting for the database" in line:
                    break
            process.send_signal(signum)
            try:
                # Well below the 60 s wait: the signal ended it, not the wait running out.
                returncode = process.wait(timeout=20)
            finally:
                if process.poll() is None:
                    process.kill()
            rest = process.stderr.read()
    assert returncode == status, "".join(lines) + rest
    assert f"{signum.name} received before the server started: stopping" in rest


def test_main_puts_the_signal_handlers_back_when_it_does_not_exec(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    assert entrypoint.main([]) == 1  # no settings

    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
