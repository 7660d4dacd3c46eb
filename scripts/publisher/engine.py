"""The container engine: Docker or Podman."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from publisher.errors import NoEngine
from publisher.programs import run

ENGINES = ("docker", "podman")


@dataclass(frozen=True)
class Engine:
    """The container engine's command (``docker``, ``podman``, or a path to either)."""

    command: str

    @property
    def is_podman(self) -> bool:
        return "podman" in Path(self.command).name


def find_engine(wanted: str | None) -> Engine:
    """The engine asked for, else the first of docker and podman that answers ``info``."""
    candidates = [wanted] if wanted else list(ENGINES)
    silent: list[str] = []
    for name in candidates:
        if shutil.which(name) is None:
            continue
        probe = run([name, "info"], quiet=True, timeout=60)
        if probe.ok:
            return Engine(name)
        silent.append(f"{name} is installed but does not answer (`{name} info`: {probe.detail})")
    if silent:
        raise NoEngine("no working container engine: " + "; ".join(silent))
    if wanted:
        raise NoEngine(f"container engine {wanted!r} not found on PATH")
    raise NoEngine(
        "no container engine: install Docker or Podman (or name one with --engine or "
        "CONTAINER_ENGINE)"
    )
