"""scripts/publish (the `publisher` package beside it), run against stand-in git, docker,
podman, skopeo and aws executables.

Each stand-in is a small bash script written into ``tmp_path/bin`` (the only directory on
PATH) that records its arguments, environment and (for ``--password-stdin``) its stdin, and
answers from a list of rules. No container engine, registry or AWS is involved; the one
network peer is a loopback HTTP server answering the registry's ``GET /v2/``.
"""

from __future__ import annotations

import http.server
import json
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from publisher.programs import Result
from publisher.registry import classify

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "publish"

VERSION = "1.2.3"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
COMMIT_TAG = "sha-0123456"
DIGEST = "sha256:" + "ab" * 32
REPOSITORY = "coffeemesh/orders"
EPOCH = "1767225600"  # 2026-01-01T00:00:00Z
PASSWORD = "ecr-password-eyJwYXlsb2FkIjoiZmFrZSJ9"
ACCOUNT = "123456789012"
REGION = "eu-west-1"
ECR = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"

PYPROJECT = f"""\
[project]
name = "orders"
version = "{VERSION}"
description = "Orders for coffee."
license = "MIT"

[project.urls]
Source = "https://example.test/coffeemesh/orders"
"""

# A stand-in is bash (a Python one costs ~50 ms per call): it records each call into
# calls/<time>-<pid>.{prog,args,env,stdin,file} using builtins only (PATH holds nothing else),
# then answers from the first rule whose arguments occur, in order, among its own.
FAKE_HEAD = r"""#!/bin/bash
call="{calls}/${{EPOCHREALTIME/./}}-$$"
printf '%s' {name} > "$call.prog"
printf '%s\0' "$@" > "$call.args"
export -p > "$call.env"
for ((i = 1; i <= $#; i++)); do
  next=$((i + 1))
  case "${{!i}}" in
    --password-stdin) IFS= read -r -d '' stdin; printf '%s' "$stdin" > "$call.stdin" ;;
    --file) IFS= read -r -d '' text < "${{!next}}"; printf '%s' "$text" > "$call.file" ;;
  esac
done
match() {{  # match N PATTERN... ARG...: the N patterns occur in order among the args
  local n=$1 i=0; shift
  local patterns=("${{@:1:n}}"); shift "$n"
  for arg in "$@"; do
    if ((i < n)) && [[ $arg == "${{patterns[i]}}" ]]; then i=$((i + 1)); fi
  done
  ((i == n))
}}
"""

FAKE_RULE = r"""if match {count} {pattern} "$@"; then
  for ((i = 1; i < $#; i++)); do
    next=$((i + 1))
    if [[ ${{!i}} == --digestfile && -n {digestfile} ]]; then
      printf '%s' {digestfile} > "${{!next}}"
    fi
  done
  printf '%s' {stdout}
  printf '%s' {stderr} >&2
  exit {rc}
fi
"""

FAKE_TAIL = r"""printf '%s: no rule for %s\n' {name} "$*" >&2
exit 99
"""


@dataclass
class Call:
    prog: str
    args: list[str]
    env: str
    stdin: str | None
    file: str | None


@dataclass
class World:
    """A project directory, the stand-in programs on PATH and what they were asked to do."""

    root: Path
    project: Path
    installed: set[str] = field(default_factory=set)
    rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def calls_dir(self) -> Path:
        return self.root / "calls"

    def install(self, *names: str) -> None:
        self.installed.update(names)

    def uninstall(self, name: str) -> None:
        self.installed.discard(name)

    def answer(self, prog: str, args: list[str], **response: Any) -> None:
        """Answer calls of ``prog`` whose arguments contain ``args`` in order (first wins)."""
        self.rules.setdefault(prog, []).insert(0, {"args": args, **response})

    def _write_fakes(self) -> None:
        for old in self.bin.iterdir():
            old.unlink()
        for name in self.installed:
            q = shlex.quote
            parts = [FAKE_HEAD.format(calls=q(str(self.calls_dir)), name=q(name))]
            for rule in self.rules.get(name, []):
                parts.append(
                    FAKE_RULE.format(
                        count=len(rule["args"]),
                        pattern=" ".join(q(arg) for arg in rule["args"]),
                        digestfile=q(rule.get("digestfile", "")),
                        stdout=q(rule.get("stdout", "")),
                        stderr=q(rule.get("stderr", "")),
                        rc=int(rule.get("rc", 0)),
                    )
                )
            parts.append(FAKE_TAIL.format(name=q(name)))
            path = self.bin / name
            path.write_text("".join(parts))
            path.chmod(0o755)

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        self._write_fakes()
        base = {"PATH": str(self.bin), "HOME": str(self.root), "SOURCE_DATE_EPOCH": EPOCH}
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args],
            cwd=self.project,
            env={**base, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def calls(self, prog: str | None = None) -> list[Call]:
        found = []
        stems = sorted({p.name.split(".")[0] for p in self.calls_dir.iterdir()})
        for stem in stems:

            def read(suffix: str, stem: str = stem) -> str | None:
                path = self.calls_dir / f"{stem}.{suffix}"
                return path.read_text() if path.exists() else None

            args = (read("args") or "").split("\0")[:-1]
            call = Call(str(read("prog")), args, str(read("env")), read("stdin"), read("file"))
            if prog is None or call.prog == prog:
                found.append(call)
        return found

    def argvs(self, prog: str) -> list[list[str]]:
        """The recorded arguments, with temporary paths replaced by ``<tmp>``."""
        shown = []
        for call in self.calls(prog):
            args = [
                "<tmp>" if arg.startswith(tempfile.gettempdir() + "/publish-") else arg
                for arg in call.args
            ]
            shown.append(args)
        return shown


@pytest.fixture
def world(tmp_path: Path) -> World:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "Containerfile").write_text("FROM scratch\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "calls").mkdir()
    w = World(root=tmp_path, project=project)
    w.install("git", "podman", "skopeo")
    w.answer("git", ["rev-parse", "--show-toplevel"], stdout=f"{project}\n")
    w.answer("git", ["rev-parse", "--verify", "HEAD"], stdout=f"{COMMIT}\n")
    w.answer("git", ["status", "--porcelain"], stdout="")
    w.answer("podman", ["info"], stdout="host: ...\n")
    w.answer("podman", ["build"], stdout="COMMIT\n")
    w.answer("podman", ["image", "inspect"], stdout='{"org.opencontainers.image.version": "0.9"}\n')
    w.answer(
        "podman", ["push"], stderr="Writing manifest to image destination\n", digestfile=DIGEST
    )
    w.answer("podman", ["login"], stdout="Login Succeeded!\n")
    w.answer("podman", ["tag"])
    w.answer(
        "skopeo",
        ["inspect"],
        rc=1,
        stderr='level=fatal msg="Error parsing image name: reading manifest in '
        'x/y: manifest unknown: manifest unknown"\n',
    )
    w.answer("docker", ["info"], stdout="Server Version: 28\n")
    w.answer("docker", ["build"], stdout="Successfully built\n")
    w.answer("docker", ["push"], stdout=f"{VERSION}: digest: {DIGEST} size: 1573\n")
    w.answer("docker", ["manifest", "inspect"], rc=1, stderr="no such manifest: x/y:1\n")
    w.answer("docker", ["login"], stdout="Login Succeeded\n")
    w.answer("docker", ["tag"])
    w.answer("aws", ["configure", "get", "region"], rc=1)
    w.answer("aws", ["sts", "get-caller-identity"], stdout=json.dumps({"Account": ACCOUNT}))
    w.answer(
        "aws",
        ["ecr", "describe-repositories"],
        rc=254,
        stderr="\nAn error occurred (RepositoryNotFoundException) when calling the "
        "DescribeRepositories operation: The repository with name 'coffeemesh/orders' does "
        "not exist in the registry with id '123456789012'\n",
    )
    w.answer(
        "aws",
        ["ecr", "create-repository"],
        stdout=json.dumps(
            {
                "repository": {
                    "repositoryUri": f"{ECR}/{REPOSITORY}",
                    "imageTagMutability": "IMMUTABLE",
                }
            }
        ),
    )
    w.answer("aws", ["ecr", "get-login-password"], stdout=PASSWORD + "\n")
    w.answer(
        "aws",
        ["ecr", "describe-images"],
        rc=254,
        stderr="\nAn error occurred (ImageNotFoundException) when calling the DescribeImages "
        "operation: The image with imageId {imageTag:'1.2.3'} does not exist\n",
    )
    return w


class _RegistryAPI(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/v2/" else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    """A loopback server answering GET /v2/ like a registry: its host:port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RegistryAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def labels_of(build_args: list[str]) -> dict[str, str]:
    pairs = [build_args[i + 1] for i, arg in enumerate(build_args) if arg == "--label"]
    return dict(pair.split("=", 1) for pair in pairs)


def tags_of(build_args: list[str]) -> list[str]:
    return [build_args[i + 1] for i, arg in enumerate(build_args) if arg == "--tag"]


# ------------------------------------------------------------------------ any registry


def test_builds_tags_labels_and_pushes_with_podman(world: World, registry: str) -> None:
    done = world.run("--registry", registry, "--repository", REPOSITORY, "--insecure")

    assert done.returncode == 0, done.stderr
    name = f"{registry}/{REPOSITORY}"
    assert done.stdout == f"{name}@{DIGEST}\n"
    assert world.argvs("git") == [
        ["rev-parse", "--show-toplevel"],
        ["-C", str(world.project), "rev-parse", "--verify", "HEAD"],
        ["-C", str(world.project), "status", "--porcelain"],
    ]
    assert world.argvs("skopeo") == [
        ["inspect", "--raw", "--tls-verify=false", f"docker://{name}:{VERSION}"]
    ]
    label_args = [
        arg
        for key, value in [
            ("title", "orders"),
            ("description", "Orders for coffee."),
            ("version", VERSION),
            ("revision", COMMIT),
            ("created", "2026-01-01T00:00:00Z"),
            ("source", "https://example.test/coffeemesh/orders"),
            ("licenses", "MIT"),
        ]
        for arg in ("--label", f"org.opencontainers.image.{key}={value}")
    ]
    assert world.argvs("podman") == [
        ["info"],
        [
            "build", "--format", "docker", "--file", str(world.project / "Containerfile"),
            "--target", "production",
            *label_args,
            "--tag", f"{name}:{COMMIT_TAG}", "--tag", f"{name}:{VERSION}",
            str(world.project),
        ],
        ["push", "--tls-verify=false", "--digestfile", "<tmp>", f"{name}:{COMMIT_TAG}"],
        ["push", "--tls-verify=false", "--digestfile", "<tmp>", f"{name}:{VERSION}"],
    ]  # fmt: skip


def test_registry_and_repository_come_from_the_environment(world: World, registry: str) -> None:
    env = {"PUBLISH_REGISTRY": registry, "PUBLISH_REPOSITORY": "team/svc"}

    done = world.run("--insecure", env=env)

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{registry}/team/svc@{DIGEST}\n"


def test_repository_defaults_to_the_project_name(world: World, registry: str) -> None:
    done = world.run("--registry", registry, "--insecure")

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{registry}/orders@{DIGEST}\n"


def test_docker_looks_up_tags_with_manifest_inspect_and_reads_the_digest_from_push(
    world: World, registry: str
) -> None:
    world.install("docker")

    done = world.run("--registry", registry, "--repository", REPOSITORY, "--insecure")

    assert done.returncode == 0, done.stderr
    name = f"{registry}/{REPOSITORY}"
    assert done.stdout == f"{name}@{DIGEST}\n"
    argvs = world.argvs("docker")
    assert argvs[0] == ["info"]
    assert argvs[1] == ["manifest", "inspect", "--insecure", f"{name}:{VERSION}"]
    assert argvs[2][:5] == [
        "build", "--file", str(world.project / "Containerfile"), "--target", "production"
    ]  # fmt: skip
    assert "--format" not in argvs[2]
    assert tags_of(argvs[2]) == [f"{name}:{COMMIT_TAG}", f"{name}:{VERSION}"]
    assert argvs[3:] == [["push", f"{name}:{COMMIT_TAG}"], ["push", f"{name}:{VERSION}"]]
    assert world.calls("podman") == []
    assert world.calls("skopeo") == []


def test_a_docker_client_without_its_engine_falls_back_to_podman(
    world: World, registry: str
) -> None:
    world.install("docker")
    world.answer(
        "docker",
        ["info"],
        rc=1,
        stderr="Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n",
    )

    done = world.run("--registry", registry, "--insecure")

    assert done.returncode == 0, done.stderr
    assert world.argvs("docker") == [["info"]]
    assert "with podman" in done.stderr


@pytest.mark.parametrize("how", ["flag", "env"])
def test_the_engine_can_be_chosen(world: World, registry: str, how: str) -> None:
    world.install("docker")
    chosen = ["--engine", "podman"] if how == "flag" else []
    env = {"CONTAINER_ENGINE": "podman"} if how == "env" else {}

    done = world.run("--registry", registry, "--insecure", *chosen, env=env)

    assert done.returncode == 0, done.stderr
    assert world.calls("docker") == []
    assert [c.args[0] for c in world.calls("podman")] == ["info", "build", "push", "push"]


def test_no_engine_is_a_clear_error(world: World, registry: str) -> None:
    world.uninstall("podman")

    done = world.run("--registry", registry, "--insecure")

    assert done.returncode == 1
    assert "no container engine: install Docker or Podman" in done.stderr
    assert done.stdout == ""


def test_an_engine_that_does_not_answer_is_named(world: World, registry: str) -> None:
    world.uninstall("podman")
    world.install("docker")
    world.answer("docker", ["info"], rc=1, stderr="Cannot connect to the Docker daemon\n")

    done = world.run("--registry", registry, "--insecure")

    assert done.returncode == 1
    assert "docker is installed but does not answer" in done.stderr
    assert "Cannot connect to the Docker daemon" in done.stderr
    assert world.argvs("docker") == [["info"]]


def test_a_dirty_work_tree_is_refused_before_anything_else(world: World, registry: str) -> None:
    world.answer("git", ["status", "--porcelain"], stdout=" M src/orders/app.py\n?? notes.txt\n")

    done = world.run("--registry", registry, "--insecure")

    assert done.returncode == 4
    assert "uncommitted changes" in done.stderr
    assert "src/orders/app.py" in done.stderr
    assert "--allow-dirty" in done.stderr
    assert world.calls("podman") == []
    assert world.calls("skopeo") == []


@pytest.mark.parametrize("flag", ["--allow-dirty", "--force"])
def test_a_dirty_build_says_so_in_its_tag_and_revision(
    world: World, registry: str, flag: str
) -> None:
    world.answer("git", ["status", "--porcelain"], stdout=" M src/orders/app.py\n")

    done = world.run("--registry", registry, "--insecure", flag)

    assert done.returncode == 0, done.stderr
    build = world.argvs("podman")[1]
    assert tags_of(build) == [
        f"{registry}/orders:{COMMIT_TAG}-dirty",
        f"{registry}/orders:{VERSION}",
    ]
    assert labels_of(build)["org.opencontainers.image.revision"] == f"{COMMIT}-dirty"


def test_an_existing_version_is_refused(world: World, registry: str) -> None:
    world.answer("skopeo", ["inspect"], stdout='{"schemaVersion": 2}')

    done = world.run("--registry", registry, "--insecure")

    assert done.returncode == 3
    assert f"{registry}/orders:{VERSION} is already published" in done.stderr
    assert "--force" in done.stderr
    assert [c.args[0] for c in world.calls("podman")] == ["info"]


def test_force_overwrites_an_existing_version(world: World, registry: str) -> None:
    world.answer("skopeo", ["inspect"], stdout='{"schemaVersion": 2}')

    done = world.run("--registry", registry, "--insecure", "--force")

    assert done.returncode == 0, done.stderr
    assert "--force: overwriting" in done.stderr
    assert [c.args[0] for c in world.calls("podman")] == ["info", "build", "push", "push"]


@pytest.mark.parametrize(
    "answer",
    [
        "unauthorized: authentication required",
        "errors:\ndenied: requested access to the resource is denied\n",
    ],
)
def test_not_logged_in_is_a_clear_error(world: World, registry: str, answer: str) -> None:
    world.answer("skopeo", ["inspect"], rc=1, stderr=f'level=fatal msg="{answer}"\n')

    done = world.run("--registry", registry, "--insecure")

    assert done.returncode == 1
    assert "not logged in" in done.stderr
    assert f"podman login {registry}" in done.stderr
    assert [c.args[0] for c in world.calls("podman")] == ["info"]


def test_force_pushes_when_the_lookup_is_denied(world: World, registry: str) -> None:
    # What GHCR answers for a package that does not exist yet.
    world.answer("skopeo", ["inspect"], rc=1, stderr="denied: permission_denied: read_package\n")

    refused = world.run("--registry", registry, "--insecure")
    forced = world.run("--registry", registry, "--insecure", "--force")

    assert refused.returncode == 1
    assert "publish it once with --force" in refused.stderr
    assert forced.returncode == 0, forced.stderr
    assert "pushing anyway" in forced.stderr
    assert [c.args[0] for c in world.calls("podman")] == ["info", "info", "build", "push", "push"]


def test_a_push_refused_for_credentials_is_a_clear_error(world: World, registry: str) -> None:
    world.answer("podman", ["push"], rc=125, stderr="Error: unauthorized: access to the resource\n")

    done = world.run("--registry", registry, "--insecure")

    assert done.returncode == 1
    assert f"refused pushing {registry}/orders:{COMMIT_TAG}" in done.stderr
    assert "not logged in" in done.stderr


def test_an_unreachable_registry_is_a_clear_error(world: World) -> None:
    registry = f"127.0.0.1:{closed_port()}"

    done = world.run("--registry", registry, "--insecure")

    assert done.returncode == 1
    assert f"cannot reach registry {registry}" in done.stderr
    assert "Connection refused" in done.stderr
    assert [c.args[0] for c in world.calls("podman")] == ["info"]
    assert world.calls("skopeo") == []


def test_a_plain_http_registry_without_insecure_gets_a_hint(world: World, registry: str) -> None:
    done = world.run("--registry", registry)

    assert done.returncode == 1
    assert f"cannot reach registry {registry}" in done.stderr
    assert "needs --insecure" in done.stderr


def test_a_registry_that_asks_for_credentials_is_reachable(
    world: World, registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_RegistryAPI, "status", 401)

    done = world.run("--registry", registry, "--insecure")

    assert done.returncode == 0, done.stderr


def test_podman_without_skopeo_says_what_to_install(world: World, registry: str) -> None:
    world.uninstall("skopeo")

    done = world.run("--registry", registry, "--insecure")

    assert done.returncode == 1
    assert "needs skopeo" in done.stderr


def test_an_image_already_built_is_relabelled_not_rebuilt(world: World, registry: str) -> None:
    done = world.run("--registry", registry, "--insecure", "--image", "localhost/orders:smoke")

    assert done.returncode == 0, done.stderr
    argvs = world.argvs("podman")
    assert argvs[1] == [
        "image", "inspect", "--format", "{{json .Config.Labels}}", "localhost/orders:smoke"
    ]  # fmt: skip
    assert world.calls("skopeo")  # looked up after the local image was found
    build = argvs[2]
    assert build[:5] == ["build", "--format", "docker", "--file", "<tmp>"]
    assert "--target" not in build  # FROM the image: one stage, nothing to choose
    assert build[-1] == "<tmp>"
    assert tags_of(build) == [f"{registry}/orders:{COMMIT_TAG}", f"{registry}/orders:{VERSION}"]
    assert labels_of(build)["org.opencontainers.image.version"] == VERSION
    assert world.calls("podman")[2].file == "FROM localhost/orders:smoke\n"


def test_an_image_with_this_versions_labels_is_only_tagged(world: World, registry: str) -> None:
    # E.g. the image just published to another registry: tagging keeps its digest.
    carried = {
        "org.opencontainers.image.title": "orders",
        "org.opencontainers.image.description": "Orders for coffee.",
        "org.opencontainers.image.version": VERSION,
        "org.opencontainers.image.revision": COMMIT,
        "org.opencontainers.image.created": "2025-12-31T23:00:00Z",
        "org.opencontainers.image.source": "https://example.test/coffeemesh/orders",
        "org.opencontainers.image.licenses": "MIT",
    }
    world.answer("podman", ["image", "inspect"], stdout=json.dumps(carried))
    image = f"ghcr.io/coffeemesh/orders:{VERSION}"

    done = world.run("--registry", registry, "--insecure", "--image", image)

    assert done.returncode == 0, done.stderr
    name = f"{registry}/orders"
    assert world.argvs("podman")[2:4] == [
        ["tag", image, f"{name}:{COMMIT_TAG}"],
        ["tag", image, f"{name}:{VERSION}"],
    ]
    assert all(c.args[0] != "build" for c in world.calls("podman"))


def test_an_image_that_is_not_there_is_a_clear_error(world: World, registry: str) -> None:
    world.answer("podman", ["image", "inspect"], rc=125, stderr="Error: nope: image not known\n")

    done = world.run("--registry", registry, "--insecure", "--image", "localhost/nope:1")

    assert done.returncode == 2
    assert "image localhost/nope:1 is not in podman's local store" in done.stderr
    assert world.calls("skopeo") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no registry"),
        (["--registry", "https://ghcr.io"], "without a scheme"),
        (["--registry", "ghcr.io", "--repository", "CoffeeMesh/Orders"], "lower-case"),
        (["--registry", "ghcr.io", "--ecr"], "exclude each other"),
    ],
)
def test_usage_errors(world: World, args: list[str], message: str) -> None:
    done = world.run(*args)

    assert done.returncode == 2
    assert message in done.stderr
    assert world.calls("podman") == []


def test_a_version_that_is_not_a_tag_is_refused(world: World, registry: str) -> None:
    (world.project / "pyproject.toml").write_text(PYPROJECT.replace(VERSION, "1.2.3+local"))

    done = world.run("--registry", registry, "--insecure")

    assert done.returncode == 2
    assert "'1.2.3+local'" in done.stderr
    assert "not a valid image tag" in done.stderr


def test_outside_a_git_work_tree(world: World, registry: str) -> None:
    world.answer(
        "git",
        ["rev-parse", "--show-toplevel"],
        rc=128,
        stderr="fatal: not a git repository (or any of the parent directories): .git\n",
    )

    done = world.run("--registry", registry, "--insecure")

    assert done.returncode == 2
    assert "not inside a git work tree" in done.stderr


# ------------------------------------------------------------------------ AWS ECR


def test_ecr_creates_the_repository_logs_in_through_a_pipe_and_pushes(world: World) -> None:
    world.install("aws")

    done = world.run("--ecr", "--repository", REPOSITORY, env={"AWS_REGION": REGION})

    assert done.returncode == 0, done.stderr
    name = f"{ECR}/{REPOSITORY}"
    assert done.stdout == f"{name}@{DIGEST}\n"
    where = ["--region", REGION, "--registry-id", ACCOUNT]
    assert world.argvs("aws") == [
        ["sts", "get-caller-identity", "--output", "json"],
        ["ecr", "describe-repositories", *where, "--repository-names", REPOSITORY,
         "--output", "json"],
        ["ecr", "create-repository", *where, "--repository-name", REPOSITORY,
         "--image-scanning-configuration", "scanOnPush=true",
         "--image-tag-mutability", "IMMUTABLE", "--output", "json"],
        ["ecr", "get-login-password", "--region", REGION],
        ["ecr", "describe-images", *where, "--repository-name", REPOSITORY,
         "--image-ids", f"imageTag={VERSION}", "--output", "json"],
    ]  # fmt: skip
    argvs = world.argvs("podman")
    assert argvs[1] == ["login", "--username", "AWS", "--password-stdin", ECR]
    assert argvs[2][0] == "build"
    assert tags_of(argvs[2]) == [f"{name}:{COMMIT_TAG}", f"{name}:{VERSION}"]
    assert argvs[3:] == [
        ["push", "--digestfile", "<tmp>", f"{name}:{COMMIT_TAG}"],
        ["push", "--digestfile", "<tmp>", f"{name}:{VERSION}"],
    ]
    assert world.calls("skopeo") == []


def test_the_ecr_password_only_travels_through_the_login_pipe(world: World) -> None:
    world.install("aws")

    done = world.run("--ecr", env={"AWS_REGION": REGION})

    assert done.returncode == 0, done.stderr
    logins = [c for c in world.calls() if c.stdin is not None]
    assert [(c.prog, c.args[0], c.stdin) for c in logins] == [("podman", "login", PASSWORD + "\n")]
    for call in world.calls():
        assert PASSWORD not in " ".join(call.args), call.args
        assert PASSWORD not in call.env, call.prog
        assert PASSWORD not in (call.file or "")
    assert PASSWORD not in done.stdout + done.stderr
    leftovers = [p for p in world.project.rglob("*") if p.is_file()]
    assert all(PASSWORD not in p.read_text() for p in leftovers)


def test_ecr_region_from_the_aws_config_and_an_existing_repository(world: World) -> None:
    world.install("aws")
    world.answer("aws", ["configure", "get", "region"], stdout="us-east-2\n")
    world.answer(
        "aws",
        ["ecr", "describe-repositories"],
        stdout=json.dumps({"repositories": [{"imageTagMutability": "IMMUTABLE"}]}),
    )

    done = world.run("--ecr")

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{ACCOUNT}.dkr.ecr.us-east-2.amazonaws.com/orders@{DIGEST}\n"
    commands = [c.args[:2] for c in world.calls("aws")]
    assert ["configure", "get"] in commands
    assert ["ecr", "create-repository"] not in commands


def test_ecr_account_can_be_given_and_then_sts_is_not_asked(world: World) -> None:
    world.install("aws")

    done = world.run("--ecr", "--account", "210987654321", "--region", "ap-south-1")

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("210987654321.dkr.ecr.ap-south-1.amazonaws.com/orders@")
    assert all(c.args[0] != "sts" for c in world.calls("aws"))


def test_ecr_existing_version_is_refused_even_with_force_when_tags_are_immutable(
    world: World,
) -> None:
    world.install("aws")
    world.answer(
        "aws",
        ["ecr", "describe-repositories"],
        stdout=json.dumps({"repositories": [{"imageTagMutability": "IMMUTABLE"}]}),
    )
    world.answer("aws", ["ecr", "describe-images"], stdout=json.dumps({"imageDetails": [{}]}))

    plain = world.run("--ecr", env={"AWS_REGION": REGION})
    forced = world.run("--ecr", "--force", env={"AWS_REGION": REGION})

    assert plain.returncode == 3
    assert "already published" in plain.stderr
    assert forced.returncode == 3
    assert "immutable tags" in forced.stderr
    assert all(c.args[0] in ("info", "login") for c in world.calls("podman"))


def test_ecr_without_a_region_is_a_clear_error(world: World) -> None:
    world.install("aws")

    done = world.run("--ecr")

    assert done.returncode == 2
    assert "no AWS region" in done.stderr


def test_ecr_without_working_aws_credentials_is_a_clear_error(world: World) -> None:
    world.install("aws")
    world.answer(
        "aws",
        ["sts", "get-caller-identity"],
        rc=253,
        stderr="\nUnable to locate credentials. You can configure credentials by running "
        '"aws configure".\n',
    )

    done = world.run("--ecr", env={"AWS_REGION": REGION})

    assert done.returncode == 1
    assert "AWS credentials do not work (Unable to locate credentials" in done.stderr
    assert all(c.args[0] == "info" for c in world.calls("podman"))


def test_ecr_login_failure_is_a_clear_error(world: World) -> None:
    world.install("aws")
    world.answer(
        "aws",
        ["ecr", "get-login-password"],
        rc=255,
        stderr="\nAn error occurred (ExpiredTokenException) when calling the "
        "GetAuthorizationToken operation: The security token included in the request is "
        "expired\n",
    )

    done = world.run("--ecr", env={"AWS_REGION": REGION})

    assert done.returncode == 1
    assert "aws ecr get-login-password failed" in done.stderr
    assert "ExpiredTokenException" in done.stderr
    assert not any(c.args[0] in ("build", "push") for c in world.calls("podman"))


def test_ecr_with_docker(world: World) -> None:
    world.install("aws")
    world.uninstall("podman")
    world.install("docker")

    done = world.run("--ecr", env={"AWS_REGION": REGION})

    assert done.returncode == 0, done.stderr
    login = world.calls("docker")[1]
    assert login.args == ["login", "--username", "AWS", "--password-stdin", ECR]
    assert login.stdin == PASSWORD + "\n"


# ------------------------------------------------------------------------ error sorting


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("no such manifest: ghcr.io/x/y:1.0.0", "missing"),
        ("reading manifest 1.0.0 in r/x: manifest unknown: manifest unknown", "missing"),
        ("unauthorized: authentication required", "auth"),
        ("denied: requested access to the resource is denied", "auth"),
        ("no basic auth credentials", "auth"),
        ('Get "https://r/v2/": dial tcp 127.0.0.1:1: connect: connection refused', "network"),
        ("dial tcp: lookup nope.invalid: no such host", "network"),
        (
            "tag invalid: The image tag '1.0.0' already exists in the 'orders' repository and "
            "cannot be overwritten because the repository is immutable.",
            "exists",
        ),
        ("something else entirely", "other"),
    ],
)
def test_registry_answers_are_sorted(stderr: str, kind: str) -> None:
    result = Result(("skopeo",), 1, "", stderr)

    assert classify(result) == kind
