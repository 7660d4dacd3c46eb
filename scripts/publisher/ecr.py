"""AWS ECR: the registry of an account and region, its repository, logging in."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Any

from publisher.engine import Engine
from publisher.errors import NotLoggedIn, PublishError, UsageError
from publisher.programs import Result, pipe, run, say, show
from publisher.registry import Target

ECR_HOST = "{account}.dkr.ecr.{region}.amazonaws.com"


def aws(*args: str) -> Result:
    return run(["aws", *args, "--output", "json"])


def find_target(repository: str, region: str | None, account: str | None) -> Target:
    """Region and account from the arguments, the environment or the AWS CLI config."""
    if shutil.which("aws") is None:
        raise UsageError("--ecr needs the AWS CLI (`aws`) on PATH")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        configured = run(["aws", "configure", "get", "region"])
        region = configured.stdout.strip() if configured.ok else ""
    if not region:
        raise UsageError(
            "no AWS region: pass --region, set AWS_REGION or `aws configure set region ...`"
        )
    if not account:
        identity = aws("sts", "get-caller-identity")
        if not identity.ok:
            raise NotLoggedIn(f"AWS credentials do not work ({identity.detail})")
        account = str(_answer(identity, "Account"))
    if not re.fullmatch(r"[0-9]{12}", account) or not re.fullmatch(r"[a-z0-9-]+", region):
        raise UsageError(f"not an AWS account id and region: {account!r} {region!r}")
    return Target(
        registry=ECR_HOST.format(account=account, region=region),
        repository=repository,
        insecure=False,
        ecr_region=region,
        ecr_account=account,
    )


def prepare(engine: Engine, target: Target) -> Target:
    """Create the repository when missing (scan on push, immutable tags), then log in."""
    region, account = str(target.ecr_region), str(target.ecr_account)
    where = ["--region", region, "--registry-id", account]
    found = aws("ecr", "describe-repositories", *where, "--repository-names", target.repository)
    if found.ok:
        repo = _answer(found, "repositories", 0)
    elif "RepositoryNotFoundException" in found.stderr:
        created = aws(
            "ecr", "create-repository", *where,
            "--repository-name", target.repository,
            "--image-scanning-configuration", "scanOnPush=true",
            "--image-tag-mutability", "IMMUTABLE",
        )  # fmt: skip
        if not created.ok:
            raise PublishError(
                f"cannot create ECR repository {target.repository}: {created.detail}"
            )
        repo = _answer(created, "repository")
        say(f"created ECR repository {repo.get('repositoryUri', target.name)}")
    else:
        raise PublishError(f"cannot look up ECR repository {target.repository}: {found.detail}")
    immutable = str(repo.get("imageTagMutability", "")).startswith("IMMUTABLE")
    if not immutable:
        say(f"note: tags in {target.name} are mutable; this command still refuses to overwrite")

    password, login = pipe(
        ["aws", "ecr", "get-login-password", "--region", region],
        [engine.command, "login", "--username", "AWS", "--password-stdin", target.registry],
    )
    if not password.ok:
        raise NotLoggedIn(f"aws ecr get-login-password failed ({password.detail})")
    if not login.ok:
        raise NotLoggedIn(f"{engine.command} login {target.registry} failed ({login.detail})")
    return dataclasses.replace(target, immutable=immutable)


def _answer(result: Result, *path: str | int) -> Any:
    """The part of the AWS CLI's JSON answer at ``path``."""
    try:
        value: Any = json.loads(result.stdout)
        for key in path:
            value = value[key]
    except (ValueError, LookupError, TypeError):
        raise PublishError(
            f"{show(result.cmd)}: unexpected answer {result.stdout[:200]!r}"
        ) from None
    return value


def tag_exists(target: Target, tag: str) -> bool:
    found = aws(
        "ecr", "describe-images",
        "--region", str(target.ecr_region), "--registry-id", str(target.ecr_account),
        "--repository-name", target.repository, "--image-ids", f"imageTag={tag}",
    )  # fmt: skip
    if found.ok:
        return True
    if "ImageNotFoundException" in found.stderr:
        return False
    raise PublishError(f"cannot look up {target.ref(tag)}: {found.detail}")
