"""Registries: where an image goes, whether a tag is there, and what their answers mean."""

from __future__ import annotations

import ipaddress
import re
import shutil
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import NoReturn

from publisher.engine import Engine
from publisher.errors import NotLoggedIn, PublishError, RegistryUnreachable, VersionExists
from publisher.programs import Result, run

# Docker's repository path grammar (lower case components), and a registry host[:port].
REPOSITORY_RE = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
REGISTRY_RE = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]+)?|\[[0-9A-Fa-f:]+\](?::[0-9]+)?")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")

# What engines, skopeo and registries say, sorted into the errors this command reports.
# Auth is tested first: some registries answer "denied" for a repository that does not
# exist, and treating that as "not published" would fail open.
_EXISTS = re.compile(r"already exists|cannot be overwritten|immutable", re.IGNORECASE)
_AUTH = re.compile(
    r"unauthori[sz]ed|authentication required|denied|forbidden|no basic auth credentials"
    r"|\b40[13]\b",
    re.IGNORECASE,
)
_MISSING = re.compile(
    r"manifest unknown|no such manifest|name unknown|manifest [^ ]* ?not found", re.IGNORECASE
)
_NETWORK = re.compile(
    r"connection refused|no such host|i/o timeout|network is unreachable|no route to host"
    r"|timed? ?out|tls handshake|server gave http response|certificate|dial tcp",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Target:
    """Where the image goes, and how to talk to that registry."""

    registry: str
    repository: str
    insecure: bool
    ecr_region: str | None = None
    ecr_account: str | None = None
    immutable: bool = False

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def ref(self, tag: str) -> str:
        return f"{self.name}:{tag}"


def classify(result: Result) -> str:
    """Sort a failed registry operation: exists, auth, missing, network or other."""
    text = f"{result.stderr}\n{result.stdout}"
    for kind, pattern in (
        ("exists", _EXISTS),
        ("auth", _AUTH),
        ("missing", _MISSING),
        ("network", _NETWORK),
    ):
        if pattern.search(text):
            return kind
    return "other"


def fail(result: Result, *, target: Target, engine: Engine, doing: str) -> NoReturn:
    """Raise the error that a failed registry operation amounts to."""
    registry = target.registry
    kind = classify(result)
    if kind == "auth" and target.ecr_region is not None:
        raise NotLoggedIn(
            f"{registry} refused {doing} ({result.detail}): the AWS identity may lack the ECR "
            "push permissions (see the README, Publishing)"
        )
    if kind == "auth":
        raise NotLoggedIn(
            f"{registry} refused {doing} ({result.detail}): not logged in, or these "
            f"credentials may not push there; log in first: `{engine.command} login {registry}`"
        )
    if kind == "network":
        raise RegistryUnreachable(f"cannot reach registry {registry} ({result.detail})")
    if kind == "exists":
        raise VersionExists(f"{registry} refused {doing}: {result.detail}")
    raise PublishError(f"{doing} failed: {result.detail}")


def check_reachable(registry: str, *, insecure: bool, timeout: float = 10) -> None:
    """GET /v2/ (the registry API's version check) before any minutes go into a build."""
    host = registry[1:].split("]")[0] if registry.startswith("[") else registry.split(":")[0]
    attempts: list[tuple[str, ssl.SSLContext | None]] = [("https", ssl.create_default_context())]
    if insecure:
        # Like the engines with --tls-verify=false: TLS without verification, then plain HTTP.
        lax = ssl.create_default_context()
        lax.check_hostname = False
        lax.verify_mode = ssl.CERT_NONE
        attempts = [("https", lax), ("http", None)]
    errors: list[str] = []
    for scheme, context in attempts:
        url = f"{scheme}://{registry}/v2/"
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=context)]
        if _is_loopback(host):  # as the engines do: no proxy for loopback
            handlers.append(urllib.request.ProxyHandler({}))
        opener = urllib.request.build_opener(*handlers)
        # The scheme is one of the two above, never taken from input.
        request = urllib.request.Request(url, headers={"User-Agent": "orders-publish"})  # noqa: S310
        try:
            with opener.open(request, timeout=timeout):
                return
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in (401, 403):  # it answers; credentials are the engine's business
                return
            raise RegistryUnreachable(
                f"{url} answered {exc.code} {exc.reason}: {registry} does not look like a "
                "container registry"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            errors.append(f"{url}: {reason}")
            if isinstance(reason, ssl.SSLError) and not insecure:
                errors.append("a plain-HTTP or self-signed registry needs --insecure")
    raise RegistryUnreachable(f"cannot reach registry {registry}: " + "; ".join(errors))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tag_exists(engine: Engine, target: Target, tag: str) -> bool:
    """Ask the registry whether it has ``tag``; anything but a clear answer is an error.
    (ECR is asked through the AWS CLI instead: `ecr.tag_exists`.)"""
    ref = target.ref(tag)
    if engine.is_podman:
        # `podman manifest inspect` (4.x) has no --tls-verify and rejects single images.
        if shutil.which("skopeo") is None:
            raise PublishError(
                "with Podman, looking up tags needs skopeo: apt-get install skopeo "
                "(or dnf install skopeo, brew install skopeo)"
            )
        tls = ["--tls-verify=false"] if target.insecure else []
        result = run(["skopeo", "inspect", "--raw", *tls, f"docker://{ref}"])
    else:
        result = run(
            [engine.command, "manifest", "inspect", *(["--insecure"] * target.insecure), ref]
        )
    if result.ok:
        return True
    if classify(result) == "missing":
        return False
    fail(result, target=target, engine=engine, doing=f"looking up {ref}")
