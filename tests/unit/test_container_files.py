"""What the container files promise that a build-and-run cannot show.

`.ci/container-smoke` builds both targets and runs them for real (user, healthcheck, image
contents, entrypoint, compose with its secret files). These are the few promises it cannot
see: how a release build is pinned and made, what a plain build without `--target` gives,
what the build context lets out of this machine, and what the compose stack publishes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yml"

PINNED_BASE = "${PYTHON_IMAGE}${PYTHON_DIGEST:+@}${PYTHON_DIGEST}"


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


@pytest.fixture(scope="module")
def stages() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(name, base, instructions) per stage, in order."""
    found: list[tuple[str, str, list[tuple[str, str]]]] = []
    for keyword, rest in instructions(CONTAINERFILE.read_text()):
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            found.append((name.strip(), base.strip(), []))
        elif found:
            found[-1][2].append((keyword, rest))
    return found


def test_every_stage_starts_from_the_digest_pinned_base_or_an_earlier_stage(
    stages: list[tuple[str, str, list[tuple[str, str]]]],
) -> None:
    # A release build passes PYTHON_DIGEST (sha256:...), so every base is one exact build.
    global_args = [rest for kw, rest in instructions(CONTAINERFILE.read_text()) if kw == "ARG"]
    assert "PYTHON_DIGEST=" in global_args
    earlier: set[str] = set()
    for name, base, _ in stages:
        assert base == PINNED_BASE or base in earlier, f"{name}: FROM {base}"
        earlier.add(name)


def test_the_build_tools_come_pinned_and_hashed() -> None:
    requirements = (ROOT / "container" / "build-requirements.txt").read_text()
    pins = [line for line in requirements.splitlines() if line and line[0].isalpha()]
    assert any(line.startswith("poetry==") for line in pins)
    assert all("==" in line for line in pins)
    assert requirements.count("--hash=sha256:") >= len(pins)
    installs = [rest for kw, rest in instructions(CONTAINERFILE.read_text()) if "pip" in rest]
    assert installs
    assert all("--require-hashes" in rest for rest in installs if "--requirement" in rest)


def test_a_plain_build_is_the_production_image_without_the_development_tools(
    stages: list[tuple[str, str, list[tuple[str, str]]]],
) -> None:
    names = [name for name, _, _ in stages]
    # `podman build .` (no --target) builds the last stage.
    assert names[-1] == "production"
    assert "dev-tools" in names
    lineage = {name: base for name, base, _ in stages}
    stage = "production"
    while stage in lineage:
        assert stage != "dev-tools", "production must not be built on the dev-tools stage"
        stage = lineage[stage]
    # Only the dev-tools stage copies the development tools; the wheel is built from
    # src/orders alone.
    for name, _, steps in stages:
        for keyword, rest in steps:
            if keyword in ("COPY", "ADD") and "orders_dev" in rest:
                assert name == "dev-tools", f"{name}: {keyword} {rest}"
            if keyword in ("COPY", "ADD") and re.search(r"(^| )src/?( |$)", rest):
                pytest.fail(f"{name} copies all of src/: {rest}")


def test_the_production_image_runs_as_a_numeric_non_root_user_with_a_liveness_check(
    stages: list[tuple[str, str, list[tuple[str, str]]]],
) -> None:
    # The smoke test builds with --target production; this is about what it inherits.
    lineage = {name: (base, steps) for name, base, steps in stages}
    steps: list[tuple[str, str]] = []
    stage = "production"
    while stage in lineage:
        base, own = lineage[stage]
        steps = own + steps
        stage = base
    user = [rest for kw, rest in steps if kw == "USER"][-1]
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric uid lets runAsNonRoot verify it"
    assert int(uid) != 0
    healthcheck = [rest for kw, rest in steps if kw == "HEALTHCHECK"][-1]
    assert "/health/live" in healthcheck


def _ignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out: the last rule matching it or a parent wins."""
    prefixes = ["/".join(path.split("/")[: n + 1]) for n in range(path.count("/") + 1)]
    result = False
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, pattern = line.startswith("!"), line.removeprefix("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            result = not negated
    return result


def test_the_build_context_is_an_allow_list_that_keeps_secrets_home() -> None:
    # A remote builder receives the whole context, whatever the image ends up holding.
    first = next(
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert first == "*"
    kept_home = [".git/HEAD", ".venv/bin/python", "tests/conftest.py", ".env", "src/orders/.env"]
    kept_home += [".devkeys/private.pem", "src/orders/dev.key", "alembic/signing.pem"]
    for path in kept_home:
        assert _ignored(path), path
    for path in ("pyproject.toml", "poetry.lock", "src/orders/app.py", "alembic/env.py"):
        assert not _ignored(path), path


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    found = yaml.safe_load(COMPOSE.read_text())["services"]
    assert isinstance(found, dict)
    return found


def test_compose_runs_the_api_from_production_and_the_tools_from_dev_tools(
    services: dict[str, Any],
) -> None:
    assert services["api"]["build"]["target"] == "production"
    builders = [name for name, service in services.items() if "build" in service]
    tools = {name for name in builders if services[name]["build"]["target"] == "dev-tools"}
    assert len(tools) == 1, "the dev-tools image is built once"
    [builder] = tools
    for name in ("keys", "standins"):
        assert services[name]["image"] == services[builder]["image"], name
        assert services[name]["pull_policy"] == "never", f"{name}: the image is only built here"


def test_compose_publishes_the_api_alone_on_loopback_with_qualified_images(
    services: dict[str, Any],
) -> None:
    published = {name: svc["ports"] for name, svc in services.items() if "ports" in svc}
    assert list(published) == ["api"]
    [port] = published["api"]
    assert port.startswith("127.0.0.1:${API_PORT:-8000}:")
    for name, service in services.items():
        # Podman resolves short names through a configurable search list: never rely on it.
        image = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", service["image"])
        registry = image.split("/")[0]
        assert "." in registry or ":" in registry or registry == "localhost", f"{name}: {image}"
