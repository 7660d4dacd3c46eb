"""What the image is made from: the project's metadata (pyproject.toml) and its git state,
and the OCI labels that say so."""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from publisher.errors import UsageError
from publisher.programs import run

OCI = "org.opencontainers.image"
# Docker's tag grammar.
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class Project:
    """What the image is made from: the project's metadata and its git state."""

    root: Path
    name: str
    version: str
    description: str
    license: str
    source: str
    commit: str
    dirty: list[str]

    @property
    def revision(self) -> str:
        return f"{self.commit}-dirty" if self.dirty else self.commit

    @property
    def commit_tag(self) -> str:
        return f"sha-{self.commit[:7]}" + ("-dirty" if self.dirty else "")


def read_project(root_arg: str | None) -> Project:
    """Read pyproject.toml and ask git for the commit and the work tree's state."""
    if root_arg is None:
        top = run(["git", "rev-parse", "--show-toplevel"], quiet=True)
        if not top.ok:
            raise UsageError(f"not inside a git work tree ({top.detail}); use --project-dir")
        root = Path(top.stdout.strip())
    else:
        root = Path(root_arg)
    pyproject = root / "pyproject.toml"
    try:
        meta: dict[str, Any] = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        name = str(meta["name"])
        version = str(meta["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{pyproject}: no [project] name and version ({exc})") from None
    if not TAG_RE.fullmatch(version):
        raise UsageError(f"version {version!r} from {pyproject} is not a valid image tag")

    head = run(["git", "-C", str(root), "rev-parse", "--verify", "HEAD"], quiet=True)
    if not head.ok or not re.fullmatch(r"[0-9a-f]{40,64}", head.stdout.strip()):
        raise UsageError(f"{root}: no git commit to publish ({head.detail})")
    status = run(["git", "-C", str(root), "status", "--porcelain"], quiet=True)
    if not status.ok:
        raise UsageError(f"git status failed in {root}: {status.detail}")

    license_ = meta.get("license", "")
    if isinstance(license_, dict):
        license_ = license_.get("text", "")
    return Project(
        root=root,
        name=name,
        version=version,
        description=str(meta.get("description", "")),
        license=str(license_),
        source=_source_url(root, meta),
        commit=head.stdout.strip(),
        dirty=[line for line in status.stdout.splitlines() if line.strip()],
    )


def _source_url(root: Path, meta: dict[str, Any]) -> str:
    urls = {str(k).lower(): str(v) for k, v in dict(meta.get("urls", {})).items()}
    for key in ("source", "repository", "homepage"):
        if key in urls:
            return urls[key]
    origin = run(["git", "-C", str(root), "remote", "get-url", "origin"], quiet=True)
    url = origin.stdout.strip() if origin.ok else ""
    # git@host:owner/name.git -> https://host/owner/name; never a URL with credentials in it.
    if match := re.fullmatch(r"[\w.-]+@([\w.-]+):(.+?)(?:\.git)?", url):
        return f"https://{match[1]}/{match[2]}"
    if match := re.fullmatch(r"https://(?:[^@/]+@)?(.+?)(?:\.git)?", url):
        return f"https://{match[1]}"
    return ""


def labels(project: Project) -> dict[str, str]:
    """The OCI annotations of the image (image-spec, annotations.md)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")  # reproducible builds pin the date
    created = (
        dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    values = {
        "title": project.name,
        "description": project.description,
        "version": project.version,
        "revision": project.revision,
        "created": created,
        "source": project.source,
        "licenses": project.license,
    }
    return {f"{OCI}.{key}": value for key, value in values.items() if value}
