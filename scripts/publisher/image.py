"""The image: built from a Containerfile or relabelled, then pushed."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from publisher.engine import Engine
from publisher.errors import PublishError, UsageError
from publisher.programs import run, say, stream
from publisher.project import OCI
from publisher.registry import DIGEST_RE, Target, fail


def build(
    engine: Engine,
    context: Path,
    containerfile: Path,
    image_labels: dict[str, str],
    refs: list[str],
    *,
    target: str | None = None,
) -> None:
    """Build ``containerfile`` (its ``target`` stage, when given) with these labels and tags."""
    # Podman's default OCI format drops HEALTHCHECK; the docker format keeps it.
    fmt = ["--format", "docker"] if engine.is_podman else []
    stage = ["--target", target] if target else []
    label_args = [
        arg for key, value in image_labels.items() for arg in ("--label", f"{key}={value}")
    ]
    tag_args = [arg for ref in refs for arg in ("--tag", ref)]
    cmd = [
        engine.command,
        "build",
        *fmt,
        "--file",
        str(containerfile),
        *stage,
        *label_args,
        *tag_args,
        str(context),
    ]
    if not stream(cmd).ok:
        raise PublishError(f"building {containerfile} failed (its output is above)")


def local_labels(engine: Engine, image: str) -> dict[str, str]:
    """The labels of a local image; an error if the engine does not have it."""
    found = run([engine.command, "image", "inspect", "--format", "{{json .Config.Labels}}", image])
    if not found.ok:
        raise UsageError(f"image {image} is not in {engine.command}'s local store ({found.detail})")
    try:
        return dict(json.loads(found.stdout) or {})
    except (ValueError, TypeError):
        raise PublishError(f"cannot read the labels of {image}: {found.stdout[:200]!r}") from None


def relabel(
    engine: Engine, image: str, current: dict[str, str], wanted: dict[str, str], refs: list[str]
) -> None:
    """Give an image that is already built the labels and tags.

    An image that already says this version and revision (published elsewhere before) is
    only tagged, so that it keeps its digest; any other gets a build of ``FROM image``, which
    adds no layer and keeps its entrypoint, user and healthcheck.
    """
    if all(current.get(k) == v for k, v in wanted.items() if k != f"{OCI}.created"):
        say(f"{image} already carries these labels: tagging it as it is")
        for ref in refs:
            tagged = run([engine.command, "tag", image, ref])
            if not tagged.ok:
                raise PublishError(f"{engine.command} tag {image} {ref} failed: {tagged.detail}")
        return
    with tempfile.TemporaryDirectory(prefix="publish-") as tmp:
        containerfile = Path(tmp, "Containerfile")
        containerfile.write_text(f"FROM {image}\n", encoding="utf-8")
        build(engine, Path(tmp), containerfile, wanted, refs)


def push(engine: Engine, target: Target, tag: str) -> str:
    """Push one tag; return the digest of the manifest the registry stored."""
    ref = target.ref(tag)
    with tempfile.TemporaryDirectory(prefix="publish-") as tmp:
        if engine.is_podman:
            digest_file = Path(tmp, "digest")
            tls = ["--tls-verify=false"] if target.insecure else []
            result = stream([engine.command, "push", *tls, "--digestfile", str(digest_file), ref])
            digest = digest_file.read_text().strip() if result.ok and digest_file.exists() else ""
        else:
            result = stream([engine.command, "push", ref])
            # "<tag>: digest: sha256:... size: N" is how docker push reports it.
            found = re.search(r"digest: (sha256:[0-9a-f]{64})", result.stdout)
            digest = found[1] if found else ""
    if not result.ok:
        fail(result, target=target, engine=engine, doing=f"pushing {ref}")
    if not DIGEST_RE.fullmatch(digest):
        raise PublishError(f"pushed {ref}, but {engine.command} did not report its digest")
    return digest
