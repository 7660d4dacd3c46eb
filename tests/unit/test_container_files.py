"""Containerfile, .dockerignore and compose.yml say what they promise, checked without an engine.

The real build and run are in `.ci/container-smoke`; these catch the regressions that are
cheap to see in the files themselves.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yml"

# .dockerignore lines in order: (negated with "!", the pattern)
Rules = list[tuple[bool, re.Pattern[str]]]


# --- Containerfile ------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name or self.base}"
        return found[-1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        result.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    assert not pending, "the Containerfile ends in a line continuation"
    return result


def stages(parsed: list[tuple[str, str]]) -> tuple[list[str], list[Stage]]:
    """Global ARGs, then the stages in order."""
    global_args: list[str] = []
    result: list[Stage] = []
    for keyword, rest in parsed:
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            if not name:
                base, _, name = rest.partition(" as ")
            result.append(Stage(base=base.strip(), name=name.strip() or None))
        elif result:
            result[-1].instructions.append((keyword, rest))
        elif keyword == "ARG":
            global_args.append(rest)
    return global_args, result


@pytest.fixture(scope="module")
def containerfile() -> tuple[list[str], list[Stage]]:
    return stages(instructions(CONTAINERFILE.read_text()))


def test_the_python_base_is_a_tag_pinned_by_a_digest_argument(
    containerfile: tuple[list[str], list[Stage]],
) -> None:
    global_args, built = containerfile
    assert "PYTHON_IMAGE=docker.io/library/python:3.12-slim" in global_args
    assert "PYTHON_DIGEST=" in global_args
    pinned = "${PYTHON_IMAGE}${PYTHON_DIGEST:+@}${PYTHON_DIGEST}"
    assert [stage.base for stage in built] == [pinned, pinned]


def test_the_build_tools_come_from_a_hashed_requirements_file(
    containerfile: tuple[list[str], list[Stage]],
) -> None:
    builder = containerfile[1][0]
    install = next(rest for rest in builder.all("RUN") if "/opt/poetry/bin/pip install" in rest)
    assert "--require-hashes" in install
    assert "build-requirements.txt" in install
    requirements = (ROOT / "container" / "build-requirements.txt").read_text()
    pins = [line for line in requirements.splitlines() if line and line[0].isalpha()]
    assert any(line.startswith("poetry==") for line in pins)
    assert all("==" in line for line in pins)
    assert requirements.count("--hash=sha256:") >= len(pins)


def test_the_build_is_multi_stage_with_a_separate_runtime(
    containerfile: tuple[list[str], list[Stage]],
) -> None:
    _, built = containerfile
    assert [stage.name for stage in built] == ["builder", "runtime"]


def test_classic_syntax_only() -> None:
    # Buildah (Podman) rejects heredocs and COPY --link.
    for keyword, rest in instructions(CONTAINERFILE.read_text()):
        assert "<<" not in rest, f"heredoc in {keyword}"
        assert "--link" not in rest
    assert not CONTAINERFILE.read_text().startswith("# syntax=")


def test_dependencies_are_installed_from_hashes_before_the_code_arrives(
    containerfile: tuple[list[str], list[Stage]],
) -> None:
    builder = containerfile[1][0]
    steps = builder.instructions
    install = next(
        i
        for i, (kw, rest) in enumerate(steps)
        if "--require-hashes" in rest and "/opt/venv" in rest
    )
    copy_src = next(i for i, (kw, rest) in enumerate(steps) if kw == "COPY" and "src" in rest)
    copy_lock = next(i for i, (kw, rest) in enumerate(steps) if "poetry.lock" in rest)
    assert copy_lock < install < copy_src
    assert "--only main" in steps[install][1]
    assert "--no-deps" in " ".join(rest for kw, rest in steps[copy_src:])


def test_the_runtime_gets_only_the_venv_the_alembic_config_and_migrations(
    containerfile: tuple[list[str], list[Stage]],
) -> None:
    runtime = containerfile[1][-1]
    copies = runtime.all("COPY")
    assert copies == [
        "--from=builder /opt/venv /opt/venv",
        "pyproject.toml ./",
        "alembic ./alembic",
    ]
    assert not runtime.all("ADD")
    assert not any("poetry" in rest or "gcc" in rest for rest in runtime.all("RUN"))


def test_the_runtime_runs_as_a_fixed_non_root_user(
    containerfile: tuple[list[str], list[Stage]],
) -> None:
    runtime = containerfile[1][-1]
    user = runtime.last("USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot verify it"
    assert int(uid) == 10001


def test_the_runtime_environment(containerfile: tuple[list[str], list[Stage]]) -> None:
    runtime = containerfile[1][-1]
    env = " ".join(runtime.all("ENV")).split()
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert runtime.last("EXPOSE") == "8000"


def test_the_healthcheck_asks_for_liveness_with_python(
    containerfile: tuple[list[str], list[Stage]],
) -> None:
    healthcheck = containerfile[1][-1].last("HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert "--interval=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    assert "/health/live" in argv[2]


def test_the_entrypoint_is_exec_form_and_exists(
    containerfile: tuple[list[str], list[Stage]],
) -> None:
    runtime = containerfile[1][-1]
    assert json.loads(runtime.last("ENTRYPOINT")) == ["python", "-m", "orders.entrypoint"]
    # An inherited CMD (python3) would become the command: it must be reset.
    assert json.loads(runtime.last("CMD")) == []
    assert (ROOT / "src" / "orders" / "entrypoint.py").is_file()


# --- .dockerignore ---------------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob: `*` and `?` stay within a path segment, `**` crosses them."""
    pattern = pattern.strip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, rules: Rules) -> bool:
    """Whether Docker leaves `path` out of the context: the last rule that matches the path
    or one of its parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negated, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negated
    return result


@pytest.fixture(scope="module")
def ignore_rules() -> Rules:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, _pattern(line.removeprefix("!"))))
    return rules


def test_the_ignore_file_is_an_allow_list() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "tests/unit/test_entrypoint.py",
        "tests/conftest.py",
        ".env",
        ".env.local",
        "src/orders/.env",
        ".devkeys/private.pem",
        "private.pem",
        "src/orders/dev.key",
        "alembic/signing.pem",
        "src/orders/__pycache__/app.cpython-312.pyc",
        "alembic/versions/__pycache__/x.cpython-312.pyc",
        ".mypy_cache/3.11/orders/app.data.json",
        ".pytest_cache/v/cache/lastfailed",
        "bench/run.py",
        "compose.yml",
        "Containerfile",
        ".ci/run",
        "pgdata/PG_VERSION",
    ],
)
def test_the_context_leaves_out(path: str, ignore_rules: Rules) -> None:
    assert ignored(path, ignore_rules)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "poetry.lock",
        "README.md",
        "src/orders/__init__.py",
        "src/orders/app.py",
        "src/orders/entrypoint.py",
        "src/orders/web/routes.py",
        "alembic/env.py",
        "alembic/script.py.mako",
        "alembic/versions/20261127_0001_orders.py",
    ],
)
def test_the_context_keeps(path: str, ignore_rules: Rules) -> None:
    assert not ignored(path, ignore_rules)


def test_everything_the_containerfile_copies_is_in_the_context(
    containerfile: tuple[list[str], list[Stage]],
    ignore_rules: Rules,
) -> None:
    for stage in containerfile[1]:
        for rest in stage.all("COPY"):
            if rest.startswith("--from="):
                continue
            for source in rest.split()[:-1]:
                assert not ignored(source.rstrip("/"), ignore_rules), source


# --- compose.yml -----------------------------------------------------------------------------

_DEFAULT = re.compile(r"\$\{[A-Z0-9_]+:-([^}]*)\}")


def with_defaults(value: str) -> str:
    """What `${NAME:-default}` interpolates to when NAME is unset."""
    return _DEFAULT.sub(lambda match: match.group(1), value)


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(amount) * units[unit]
    return total


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def test_the_stack_has_the_database_broker_keys_stand_ins_and_api(services: dict[str, Any]) -> None:
    assert set(services) == {"db", "rabbitmq", "keys", "standins", "api"}


def test_every_image_name_is_fully_qualified(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = with_defaults(service["image"])
        registry = image.split("/")[0]
        assert "/" in image, f"{name}: {image}"
        assert "." in registry or ":" in registry or registry == "localhost", f"{name}: {image}"
    assert services["db"]["image"] == "docker.io/library/postgres:17"


def test_the_api_builds_the_containerfile_and_the_helpers_reuse_its_image(
    services: dict[str, Any],
) -> None:
    assert services["api"]["build"] == {
        "context": ".",
        "dockerfile": "Containerfile",
        "args": {"PYTHON_DIGEST": "${PYTHON_DIGEST:-}"},
    }
    for name in ("keys", "standins"):
        assert "build" not in services[name], f"{name} would build the same image again"
        assert services[name]["image"] == services["api"]["image"], name
        assert services[name]["pull_policy"] == "never", f"{name}: the image is only built here"


def test_the_api_waits_for_a_healthy_database_and_the_keys(services: dict[str, Any]) -> None:
    depends_on = services["api"]["depends_on"]
    assert depends_on["db"]["condition"] == "service_healthy"
    assert depends_on["keys"]["condition"] == "service_completed_successfully"


def test_the_database_is_not_published_and_keeps_its_data(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    db = services["db"]
    assert "ports" not in db
    volume, _, target = db["volumes"][0].partition(":")
    assert target == "/var/lib/postgresql/data"
    assert volume in compose["volumes"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])


def test_database_credentials_come_from_secret_files(compose: dict[str, Any]) -> None:
    services = compose["services"]
    db, api = services["db"], services["api"]
    assert db["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    assert "POSTGRES_PASSWORD" not in db["environment"]
    assert db["secrets"] == ["db_password"]
    # The settings read /run/secrets/database_url (SECRETS_DIR); never the environment.
    assert "DATABASE_URL" not in api["environment"]
    assert api["secrets"] == ["database_url"]
    for name in ("db_password", "database_url"):
        assert compose["secrets"][name]["file"].endswith(f"/{name}")


def test_the_api_talks_to_the_stack(services: dict[str, Any]) -> None:
    env = {key: with_defaults(str(value)) for key, value in services["api"]["environment"].items()}
    assert env["PAYMENTS_URL"] == env["KITCHEN_URL"] == "http://standins:8001"
    assert "@rabbitmq:5672/" in env["BROKER_URL"]
    assert env["JWT_PUBLIC_KEY_FILE"].startswith("/")


def test_the_api_port_is_configurable(services: dict[str, Any]) -> None:
    ports = services["api"]["ports"]
    assert len(ports) == 1
    assert "${API_PORT:-8000}" in ports[0]
    assert ports[0].endswith(":8000")


def test_the_api_sees_only_the_public_key(services: dict[str, Any]) -> None:
    keys_volumes = {v.split(":")[0]: v.split(":")[1] for v in services["keys"]["volumes"]}
    api_volumes = [v.split(":")[0] for v in services["api"]["volumes"]]
    private_volume = next(v for v, target in keys_volumes.items() if target.endswith(".devkeys"))
    assert private_volume not in api_volumes
    assert all(v.endswith(":ro") for v in services["api"]["volumes"])


def test_tokens_and_the_api_agree_on_audience_and_issuer(services: dict[str, Any]) -> None:
    for name in ("JWT_AUDIENCE", "JWT_ISSUER"):
        assert services["keys"]["environment"][name] == services["api"]["environment"][name]


def test_the_api_stops_gracefully_within_its_grace_period(services: dict[str, Any]) -> None:
    api = services["api"]
    graceful = float(api["environment"]["UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN"])
    assert seconds(api["stop_grace_period"]) > graceful
    assert "/health/ready" in " ".join(api["healthcheck"]["test"])


def test_healthchecks_survive_podmans_compat_api(services: dict[str, Any]) -> None:
    # Podman's Docker API splits exec-form arguments at spaces (containers/podman#26519).
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        if isinstance(test, list) and test[0] == "CMD":
            assert not any(" " in arg for arg in test[1:]), name
