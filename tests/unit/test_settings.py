"""Settings: names, defaults, validation, and one clear line when something is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from orders.app import create_app
from orders.settings import ConfigurationError, DatabaseSettings, ServerLimits, Settings
from orders_dev.devtoken import generate_key_pair

PUBLIC = generate_key_pair()[1].decode()
REQUIRED = {
    "DATABASE_URL": "postgresql://app:secret@db:5432/orders",
    "JWT_PUBLIC_KEY": PUBLIC,
    "JWT_AUDIENCE": "orders",
    "JWT_ISSUER": "https://issuer.test",
    "PAYMENTS_URL": "http://payments:8001",
    "KITCHEN_URL": "http://kitchen:8002",
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean environment with every required variable set; tests change it from there."""
    for name in list(os.environ):
        if name.startswith(
            (
                "DATABASE_",
                "DB_",
                "JWT_",
                "JWKS_",
                "PAYMENTS_",
                "KITCHEN_",
                "LOG_",
                "HTTP_",
                "ACTION_",
            )
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "no-secrets"))
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_everything_loads_from_the_environment(environment: pytest.MonkeyPatch) -> None:
    settings = Settings.load()

    assert settings.jwt_algorithms == ("RS256",)
    assert settings.max_body_bytes == 64 * 1024
    assert str(settings.payments_url) == "http://payments:8001/"
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://app:pw@db/orders", "postgresql+asyncpg://app:pw@db/orders"),
        ("postgresql+asyncpg://app:pw@db/orders", "postgresql+asyncpg://app:pw@db/orders"),
        ("postgres://app:pw@db:5433/orders", "postgresql+asyncpg://app:pw@db:5433/orders"),
        (
            "postgresql+asyncpg://postgres:@/postgres?host=/tmp/pg",
            "postgresql+asyncpg://postgres:@/postgres?host=/tmp/pg",
        ),
    ],
)
def test_both_url_forms_work(given: str, expected: str) -> None:
    settings = DatabaseSettings(database_url=given)

    assert settings.sqlalchemy_url == make_url(expected)


def test_libpq_sslmode_becomes_asyncpgs_ssl() -> None:
    settings = DatabaseSettings(database_url="postgresql://app:pw@db/orders?sslmode=require")

    assert settings.sqlalchemy_url.query == {"ssl": "require"}


@pytest.mark.parametrize(
    "url",
    [
        "mysql://db/orders",
        "postgresql+psycopg://db/orders",
        "sqlite:///x.db",
        "nonsense",
        "postgresql://db/orders?connect_timeout=5",
    ],
)
def test_other_databases_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        DatabaseSettings.load(database_url=url)


def test_algorithms_are_a_comma_separated_list(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("JWT_ALGORITHMS", "RS256, RS512")

    assert Settings.load().jwt_algorithms == ("RS256", "RS512")


@pytest.mark.parametrize("algorithms", ["none", "HS256", "RS256,HS512", "", "PS256"])
def test_symmetric_and_none_algorithms_are_refused(
    environment: pytest.MonkeyPatch, algorithms: str
) -> None:
    environment.setenv("JWT_ALGORITHMS", algorithms)

    with pytest.raises(ConfigurationError, match="JWT_ALGORITHMS"):
        Settings.load()


def test_exactly_one_key_source(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("JWT_JWKS_URL", "https://issuer.test/jwks.json")
    with pytest.raises(ConfigurationError, match="exactly one of"):
        Settings.load()

    environment.delenv("JWT_JWKS_URL")
    environment.delenv("JWT_PUBLIC_KEY")
    with pytest.raises(ConfigurationError, match="exactly one of"):
        Settings.load()


def test_a_lease_must_outlive_the_calls_it_covers(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("HTTP_CALL_DEADLINE", "20")
    with pytest.raises(ConfigurationError, match=r"ACTION_LEASE_SECONDS .* HTTP_CALL_DEADLINE"):
        Settings.load()

    environment.setenv("ACTION_LEASE_SECONDS", "80")
    assert Settings.load().action_lease_seconds == 80


def test_a_jwks_url_over_plain_http_is_refused_unless_allowed_for_local_use(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.delenv("JWT_PUBLIC_KEY")
    environment.setenv("JWT_JWKS_URL", "http://issuer.test/jwks.json")
    with pytest.raises(ConfigurationError, match="must be an https:// URL"):
        Settings.load()

    environment.setenv("JWT_JWKS_ALLOW_HTTP", "true")
    assert str(Settings.load().jwt_jwks_url) == "http://issuer.test/jwks.json"

    environment.setenv("JWT_JWKS_URL", "https://issuer.test/jwks.json")
    environment.setenv("JWT_JWKS_ALLOW_HTTP", "false")
    assert Settings.load().jwt_jwks_url is not None


def test_server_limits_have_bounds(environment: pytest.MonkeyPatch) -> None:
    assert ServerLimits.load().http_max_header_bytes == 16 * 1024

    environment.setenv("HTTP_MAX_HEADER_BYTES", "100")
    with pytest.raises(ConfigurationError, match="HTTP_MAX_HEADER_BYTES"):
        ServerLimits.load()


def test_missing_settings_are_named_on_one_line(environment: pytest.MonkeyPatch) -> None:
    environment.delenv("DATABASE_URL")
    environment.delenv("JWT_AUDIENCE")

    with pytest.raises(ConfigurationError) as caught:
        Settings.load()

    message = str(caught.value)
    assert "\n" not in message
    assert "DATABASE_URL" in message
    assert "JWT_AUDIENCE" in message


def test_secrets_can_come_from_files(environment: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "database_url").write_text("postgresql://app:from-file@db/orders")
    environment.delenv("DATABASE_URL")
    environment.setenv("SECRETS_DIR", str(secrets))

    url = Settings.load().database_url.get_secret_value()

    assert url == "postgresql+asyncpg://app:from-file@db/orders"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"DATABASE_URL": None}, "DATABASE_URL"),
        ({"JWT_ALGORITHMS": "HS256"}, "JWT_ALGORITHMS"),
        ({"JWT_PUBLIC_KEY": "not a key"}, "JWT_PUBLIC_KEY"),
        (
            {"JWT_PUBLIC_KEY": None, "JWT_PUBLIC_KEY_FILE": "/nonexistent.pem"},
            "JWT_PUBLIC_KEY_FILE",
        ),
        ({"MAX_BODY_BYTES": "lots"}, "MAX_BODY_BYTES"),
    ],
)
def test_a_bad_setting_stops_create_app_with_one_line(
    environment: pytest.MonkeyPatch, change: dict[str, str | None], named: str
) -> None:
    for key, value in change.items():
        if value is None:
            environment.delenv(key)
        else:
            environment.setenv(key, value)

    with pytest.raises(SystemExit) as caught:
        create_app()

    message = str(caught.value.code)
    assert message.startswith("orders: invalid configuration:")
    assert "\n" not in message
    assert named in message


def test_uvicorn_prints_that_line_and_no_traceback(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "JWT_", "PAYMENTS_", "KITCHEN_"))
    }
    env.update(REQUIRED)
    env.pop("DATABASE_URL")
    env["SECRETS_DIR"] = str(tmp_path)

    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--factory", "orders.app:create_app", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("orders:")]
    assert "DATABASE_URL" in line


def test_importing_the_package_does_no_work() -> None:
    # With no configuration at all, importing every module still works: nothing reads
    # settings, connects, or builds an app at import time.
    modules = [
        "orders.app",
        "orders.web.routes",
        "orders.adapters.repository",
        "orders.adapters.unit_of_work",
        "orders.service.orders",
        "orders_dev.devtoken",
        "orders_dev.standins",
    ]
    env = {"PATH": os.environ.get("PATH", ""), "SECRETS_DIR": "/nonexistent"}

    result = subprocess.run(
        [sys.executable, "-c", "; ".join(f"import {module}" for module in modules)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
