"""The command line: parse it, then publish."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import publisher
from publisher import ecr, registry
from publisher.engine import find_engine
from publisher.errors import DirtyWorkTree, NotLoggedIn, PublishError, UsageError, VersionExists
from publisher.image import build, local_labels, push, relabel
from publisher.programs import say
from publisher.project import labels, read_project
from publisher.registry import REGISTRY_RE, REPOSITORY_RE, Target, check_reachable


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="publish",
        description=publisher.__doc__.split("\n\n")[0] if publisher.__doc__ else None,
        epilog="Exit status: 0 published; 1 error; 2 usage; 3 version already published; "
        "4 uncommitted changes.",
    )
    parser.add_argument(
        "--registry",
        default=env("PUBLISH_REGISTRY"),
        help="registry host[:port] (env PUBLISH_REGISTRY); not with --ecr",
    )
    parser.add_argument(
        "--repository",
        default=env("PUBLISH_REPOSITORY"),
        help="repository path in the registry, e.g. coffeemesh/orders "
        "(env PUBLISH_REPOSITORY; default: the project name)",
    )
    parser.add_argument(
        "--engine",
        default=env("CONTAINER_ENGINE"),
        help="docker or podman (env CONTAINER_ENGINE; default: the first that answers)",
    )
    parser.add_argument(
        "--image", help="publish this local image instead of building the Containerfile"
    )
    parser.add_argument(
        "--file", default="Containerfile", help="Containerfile, relative to the project"
    )
    parser.add_argument(
        "--target",
        default="production",
        help="the Containerfile's stage to build (default: production, the service alone)",
    )
    parser.add_argument("--project-dir", help="the project (default: the git top level of the cwd)")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="the registry speaks plain HTTP or has a self-signed certificate",
    )
    parser.add_argument(
        "--ecr",
        action="store_true",
        help="publish to AWS ECR: create the repository when missing, log in",
    )
    parser.add_argument("--region", help="AWS region for --ecr (default: AWS_REGION, AWS config)")
    parser.add_argument(
        "--account",
        default=env("AWS_ACCOUNT_ID"),
        help="AWS account id for --ecr (default: the caller's, from STS)",
    )
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="publish from a work tree with uncommitted changes",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing version tag (implies --allow-dirty)",
    )
    return parser.parse_args(argv)


def publish(args: argparse.Namespace) -> str:
    """Do the whole publication; return the pinned reference of what was pushed."""
    started = time.monotonic()
    if args.ecr and args.registry:
        raise UsageError("--ecr and --registry exclude each other (ECR's registry comes from AWS)")
    if not args.ecr and not args.registry:
        raise UsageError(
            "no registry: pass --registry HOST[:PORT] or set PUBLISH_REGISTRY, or --ecr"
        )
    if args.registry and not REGISTRY_RE.fullmatch(args.registry):
        raise UsageError(f"registry {args.registry!r}: give host[:port], without a scheme or path")

    project = read_project(args.project_dir)
    repository = args.repository or project.name
    if not REPOSITORY_RE.fullmatch(repository):
        raise UsageError(
            f"repository {repository!r}: lower-case path components only, e.g. team/orders"
        )
    if project.dirty and not (args.allow_dirty or args.force):
        shown = "\n  ".join(project.dirty[:10]) + ("\n  ..." if len(project.dirty) > 10 else "")
        raise DirtyWorkTree(
            f"the work tree has uncommitted changes; commit them, or pass --allow-dirty to "
            f"publish a {project.commit_tag} image anyway:\n  {shown}"
        )
    containerfile = project.root / args.file
    if args.image is None and not containerfile.is_file():
        raise UsageError(f"no {containerfile}: build it there, or pass --image IMAGE")

    engine = find_engine(args.engine)
    say(f"publishing {project.name} {project.version} ({project.revision}) with {engine.command}")
    image_labels_now = local_labels(engine, args.image) if args.image else {}
    if args.ecr:
        target = ecr.prepare(engine, ecr.find_target(repository, args.region, args.account))
    else:
        target = Target(registry=args.registry, repository=repository, insecure=args.insecure)
        check_reachable(target.registry, insecure=target.insecure)

    version_ref = target.ref(project.version)
    try:
        exists = (
            ecr.tag_exists(target, project.version)
            if target.ecr_region is not None
            else registry.tag_exists(engine, target, project.version)
        )
    except NotLoggedIn as exc:
        # GHCR, for one, answers "denied" for a package it has never seen: the first publish
        # of a new repository cannot tell that from missing credentials.
        if not args.force:
            raise NotLoggedIn(
                f"{exc}. (If {target.name} does not exist yet and the registry denies "
                "looking up unknown repositories, as GHCR does, publish it once with --force.)"
            ) from None
        say(f"--force: cannot look up {version_ref} ({exc}); pushing anyway")
        exists = False
    if exists:
        if not args.force:
            raise VersionExists(
                f"{version_ref} is already published; bump [project] version in "
                "pyproject.toml (or pass --force to overwrite it)"
            )
        if target.immutable:
            raise VersionExists(f"{version_ref} exists and {target.name} has immutable tags")
        say(f"--force: overwriting {version_ref}")

    refs = [target.ref(project.commit_tag), version_ref]
    image_labels = labels(project)
    if args.image:
        relabel(engine, args.image, image_labels_now, image_labels, refs)
    else:
        build(engine, project.root, containerfile, image_labels, refs, target=args.target)

    # The commit tag first: the version tag appears only once everything else is there.
    commit_digest = push(engine, target, project.commit_tag)
    digest = push(engine, target, project.version)
    if commit_digest != digest:
        say(f"note: {refs[0]} has digest {commit_digest}, {version_ref} has {digest}")
    elapsed = time.monotonic() - started
    say(f"published {version_ref} and :{project.commit_tag} -> {digest} in {elapsed:.0f}s")
    return f"{target.name}@{digest}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        print(publish(args), flush=True)
    except PublishError as exc:
        say(f"publish: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0
