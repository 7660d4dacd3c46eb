"""Configuration, read once from the environment (and secret files) and validated.

`DatabaseSettings` holds what every process that talks to the database needs (the server,
Alembic, the container entrypoint); `EventSettings` adds the broker (the event worker);
`Settings` adds what the HTTP service needs. `ServerLimits` are the HTTP server's bounds and
`StartupSettings` the container entrypoint's own switches. Nothing here is instantiated at
import: call `load()` where the process starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# The asymmetric signatures python-jose's cryptography backend verifies (it has no PS*).
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})
DEFAULT_SECRETS_DIR = "/run/secrets"
# How many deadlines of collaborator calls one claim must outlive.
CALLS_PER_CLAIM = 4
# Query parameters of DATABASE_URL that reach asyncpg.connect() as they are.
_URL_PARAMETERS = frozenset({"host", "port", "ssl", "direct_tls", "target_session_attrs"})


class ConfigurationError(Exception):
    """The environment does not describe a valid configuration; the message is one line."""


def _one_line(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        name = "_".join(str(part) for part in item["loc"]).upper() or "configuration"
        problems.append(f"{name}: {item['msg']}")
    return "invalid configuration: " + "; ".join(problems)


class EnvironmentSettings(BaseSettings):
    """Settings read from the environment and secret files, validated in one go."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Read the environment (and secret files); raise ConfigurationError in one line."""
        secrets_dir = os.environ.get("SECRETS_DIR", DEFAULT_SECRETS_DIR)
        kwargs: dict[str, Any] = dict(overrides)
        if Path(secrets_dir).is_dir():
            kwargs["_secrets_dir"] = secrets_dir
        try:
            return cls(**kwargs)
        except ValidationError as error:
            raise ConfigurationError(_one_line(error)) from None


class DatabaseSettings(EnvironmentSettings):
    """Where the database is and how the process pools connections to it."""

    database_url: SecretStr = Field(
        description="postgresql:// or postgresql+asyncpg:// URL of the database."
    )
    db_pool_size: int = Field(default=15, ge=1, le=500)
    # Overflow connections are closed as soon as they are returned, so under steady load
    # they are opened and closed over and over; a pool of the right size is cheaper.
    db_max_overflow: int = Field(default=0, ge=0, le=500)
    db_pool_timeout: float = Field(
        default=5.0, gt=0, description="Seconds a request waits for a pooled connection."
    )
    db_connect_timeout: float = Field(
        default=3.0, gt=0, description="Seconds to establish a new database connection."
    )
    db_command_timeout: float = Field(
        default=10.0, gt=0, description="Seconds any single statement may take."
    )

    # Behind a connection pooler in transaction mode (PgBouncer `pool_mode = transaction`),
    # consecutive transactions of one connection may run on different server connections.
    db_transaction_pooling: bool = Field(
        default=False,
        description="DATABASE_URL reaches PostgreSQL through a transaction-pooling PgBouncer.",
    )

    @field_validator("database_url", mode="before")
    @classmethod
    def _async_driver(cls, value: Any) -> Any:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            return value
        try:
            url = make_url(raw)
        except ArgumentError:
            raise ValueError("not a database URL") from None
        if url.drivername == "postgres":
            url = url.set(drivername="postgresql")
        if url.get_backend_name() != "postgresql":
            raise ValueError("must be a postgresql:// URL")
        if url.drivername not in ("postgresql", "postgres", "postgresql+asyncpg"):
            raise ValueError("the driver must be asyncpg (postgresql+asyncpg://)")
        # asyncpg takes the URL's query as connect() arguments: libpq's `sslmode` is its `ssl`,
        # and anything it does not know would fail every connection, so refuse it now.
        query = dict(url.query)
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        unknown = sorted(set(query) - _URL_PARAMETERS)
        if unknown:
            raise ValueError(
                f"unsupported URL parameter(s) {', '.join(unknown)}"
                f" (supported: {', '.join(sorted(_URL_PARAMETERS))}, sslmode)"
            )
        url = url.set(drivername="postgresql+asyncpg", query=query)
        return SecretStr(url.render_as_string(hide_password=False))

    @property
    def sqlalchemy_url(self) -> URL:
        """The URL with the asyncpg driver, password included, for create_async_engine."""
        return make_url(self.database_url.get_secret_value())


class MigrationSettings(DatabaseSettings):
    """What Alembic adds to the database settings when it migrates."""

    # A migration waiting for a lock behind a long transaction would block every query
    # queued behind it: give up instead, and let the next start try again.
    db_migration_lock_timeout: float = Field(
        default=5.0, gt=0, le=600, description="Seconds a migration waits for a table lock."
    )
    db_migration_statement_timeout: float = Field(
        default=300.0, gt=0, description="Seconds any single migration statement may take."
    )


class EventSettings(DatabaseSettings):
    """Order events over RabbitMQ (asyncapi.yaml; see orders.adapters.events): what the API
    process and `python -m orders.worker` need. With no BROKER_URL nothing connects and
    events wait in the outbox."""

    broker_url: SecretStr | None = Field(
        default=None, description="amqp:// or amqps:// URL of the RabbitMQ virtual host."
    )
    relay_enabled: bool = Field(
        default=True, description="Publish the outbox from this process (needs BROKER_URL)."
    )
    relay_batch_size: int = Field(default=200, ge=1, le=10_000)
    relay_idle_seconds: float = Field(
        default=0.5, gt=0, le=60, description="Seconds between two looks at an empty outbox."
    )
    outbox_keep_hours: float = Field(
        default=168.0, gt=0, description="Hours published events stay in the outbox table."
    )
    relay_retry_max_seconds: float = Field(
        default=30.0, gt=0, description="Longest wait between two tries to reach the broker."
    )
    consumer_enabled: bool = Field(
        default=True, description="Apply kitchen's and delivery's news (needs BROKER_URL)."
    )
    consumer_queue: str = Field(default="orders.status", min_length=1, max_length=200)
    consumer_prefetch: int = Field(default=20, ge=1, le=1000)
    consumer_max_attempts: int = Field(
        default=5, ge=1, le=50, description="Tries of a message before it is dead-lettered."
    )

    @field_validator("broker_url", mode="before")
    @classmethod
    def _amqp(cls, value: Any) -> Any:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw == "":
            return None
        if isinstance(raw, str) and not raw.startswith(("amqp://", "amqps://")):
            raise ValueError("must be an amqp:// or amqps:// URL")
        return value


class Settings(EventSettings):
    """Everything the orders HTTP service reads from its environment."""

    # Identity (docs/adr/0003-token-verification.md): exactly one key source.
    jwt_public_key: SecretStr | None = Field(default=None, description="PEM public key text.")
    jwt_public_key_file: Path | None = None
    jwt_jwks_url: AnyHttpUrl | None = None
    jwt_audience: str = Field(min_length=1)
    jwt_issuer: str = Field(min_length=1)
    jwt_algorithms: Annotated[tuple[str, ...], NoDecode] = ("RS256",)
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_cache_seconds: float = Field(default=600.0, gt=0)
    jwks_min_refresh_seconds: float = Field(
        default=30.0, ge=0, description="Least time between two JWKS fetches."
    )
    # Keys fetched over plain http can be replaced by anyone on the path: only for local use.
    jwt_jwks_allow_http: bool = False
    jwks_max_bytes: int = Field(
        default=256 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest JWKS accepted."
    )
    jwks_fetch_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Deadline for one whole JWKS fetch."
    )

    # Collaborators (docs/collaborators.md).
    payments_url: AnyHttpUrl
    kitchen_url: AnyHttpUrl
    http_connect_timeout: float = Field(default=2.0, gt=0)
    http_read_timeout: float = Field(default=5.0, gt=0)
    http_connect_retries: int = Field(default=2, ge=0, le=5)
    http_call_deadline: float = Field(
        default=10.0,
        gt=0,
        description="Seconds one call to payments or kitchen may take in all, retries included.",
    )
    action_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a pay or cancel in flight holds its order before others may retry.",
    )

    # Completing what was left unfinished, in the background (see service.reconciler).
    reconcile_enabled: bool = True
    reconcile_interval_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="Seconds between two looks for unfinished work."
    )
    reconcile_batch_size: int = Field(
        default=20, ge=1, le=1000, description="Orders one worker takes on at a time."
    )
    reconcile_retry_max_seconds: float = Field(
        default=300.0, gt=0, description="Longest wait between two tries of an unknown outcome."
    )

    # Pages, idempotency keys (docs/api.md).
    page_size: int = Field(
        default=20, ge=1, le=1000, description="Orders in a list page when `limit` is not given."
    )
    page_size_max: int = Field(
        default=100, ge=1, le=1000, description="The largest `limit` a list request may ask for."
    )
    page_cursor_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="Secret the page cursors are signed with, the same in every replica; "
        "without it, one is derived from DATABASE_URL.",
    )
    idempotency_key_ttl_seconds: float = Field(
        default=86400.0, gt=0, description="How long an idempotency key and its answer live."
    )
    idempotency_purge_interval_seconds: float = Field(
        default=300.0, gt=0, description="Seconds between two clean-ups of expired keys."
    )

    # HTTP and operations.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_items_per_order: int = Field(default=100, ge=1, le=10_000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    # Observability: Prometheus metrics on a port of their own (none: not served; the image
    # sets 9464), and what build_info reports. Tracing is set by the standard OTEL_* variables.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = Field(default="0.0.0.0", min_length=1)  # noqa: S104 (scraped from outside)
    build_commit: str = Field(default="unknown", min_length=1, max_length=64)

    # Schema (readiness): the Alembic configuration whose migrations this build ships; the
    # same variable the entrypoint migrates with.
    alembic_config: Path = Field(
        default=Path("pyproject.toml"),
        description="The file holding [tool.alembic]; its head is the schema readiness expects.",
    )

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one algorithm is required")
        refused = [alg for alg in value if alg not in ASYMMETRIC_ALGORITHMS]
        if refused:
            raise ValueError(
                f"not an accepted asymmetric algorithm: {', '.join(refused)} "
                f"(choose from {', '.join(sorted(ASYMMETRIC_ALGORITHMS))})"
            )
        return value

    @model_validator(mode="after")
    def _calls_end_inside_the_lease(self) -> Self:
        # A claim covers up to three calls (find a schedule, cancel it, refund) besides its
        # transactions: it must outlive them all, or another worker takes over mid-call.
        if self.action_lease_seconds < CALLS_PER_CLAIM * self.http_call_deadline:
            raise ValueError(
                f"ACTION_LEASE_SECONDS ({self.action_lease_seconds:g}) must be at least "
                f"{CALLS_PER_CLAIM} times HTTP_CALL_DEADLINE ({self.http_call_deadline:g})"
            )
        return self

    @model_validator(mode="after")
    def _page_size_within_max(self) -> Self:
        if self.page_size > self.page_size_max:
            raise ValueError(
                f"PAGE_SIZE ({self.page_size}) must not exceed PAGE_SIZE_MAX ({self.page_size_max})"
            )
        return self

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        given = [
            name
            for name, value in (
                ("JWT_PUBLIC_KEY", self.jwt_public_key),
                ("JWT_PUBLIC_KEY_FILE", self.jwt_public_key_file),
                ("JWT_JWKS_URL", self.jwt_jwks_url),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of JWT_PUBLIC_KEY, JWT_PUBLIC_KEY_FILE, JWT_JWKS_URL"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @model_validator(mode="after")
    def _jwks_over_https(self) -> Self:
        if (
            self.jwt_jwks_url is not None
            and self.jwt_jwks_url.scheme != "https"
            and not self.jwt_jwks_allow_http
        ):
            raise ValueError(
                "JWT_JWKS_URL must be an https:// URL (plain http only with "
                "JWT_JWKS_ALLOW_HTTP=true, for local use)"
            )
        return self


class ServerLimits(EnvironmentSettings):
    """The HTTP server's limits (`orders.httpguard` and the uvicorn command line)."""

    http_header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Seconds a client has to send a request head."
    )
    # Enough for an 8 KiB bearer token and the usual headers of browsers and proxies.
    http_max_header_bytes: int = Field(default=16 * 1024, ge=4096, le=1024 * 1024)
    http_max_headers: int = Field(default=100, ge=10, le=1000)
    http_keep_alive_seconds: int = Field(
        default=5, ge=1, le=300, description="Seconds an idle connection stays open."
    )
    http_limit_concurrency: int = Field(
        default=256,
        ge=1,
        description="Connections plus requests in progress per worker before 503.",
    )


class StartupSettings(EnvironmentSettings):
    """What the container entrypoint (`orders.entrypoint`) does before the server runs."""

    # An empty variable means the default, as a shell or compose file leaves it when unset.
    model_config = SettingsConfigDict(env_ignore_empty=True)

    migrate_on_start: bool = Field(
        default=True,
        description="Wait for the database and migrate it first (false: a separate job does).",
    )
    db_wait_seconds: float = Field(
        default=60.0, ge=0, description="Seconds to wait for the database to accept connections."
    )
    uvicorn_timeout_graceful_shutdown: int = Field(
        default=20,
        ge=0,
        description="Seconds requests in flight get to finish after SIGTERM.",
    )
