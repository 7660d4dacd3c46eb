"""The Kubernetes manifests, rendered by `kubectl kustomize` for every overlay: what a schema
cannot see. (`.ci/run` validates the same output against the Kubernetes schemas.)

Probe paths are routes of the app, the grace period covers the preStop pause and uvicorn's
graceful timeout, selectors meet across Deployment, Service, HPA, PDB and NetworkPolicy,
the migrations Job runs the Deployment's image, no image floats, no secret value is written
down, and every configured name is a setting the service reads.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
import yaml
from starlette.routing import Route

from orders.settings import ServerLimits, Settings, StartupSettings
from orders.web.routes import routes
from tests.conftest import ROOT

KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(path.name for path in (KUBERNETES / "overlays").iterdir() if path.is_dir())
# Created by the operator (README, "Running on Kubernetes"), never written in the repo.
OPERATOR_SECRETS = {"orders-database", "orders-postgres"}
OPERATOR_CONFIG_MAPS = {"orders-jwt"}
# Read by uvicorn itself.
UVICORN_VARIABLES = {"WEB_CONCURRENCY"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE|DATABASE_URL|CREDENTIAL", re.IGNORECASE)
CREDENTIALS_IN_URL = re.compile(r"://[^/@\s]+:[^/@\s]+@")
ECR_IMAGE = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/(?P<repository>[^:@]+)")

Manifest = dict[str, Any]


def kubectl() -> str:
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    assert found, "kubectl is needed to render the manifests (set KUBECTL or put it on PATH)"
    return found


@cache
def rendered(overlay: str) -> tuple[Manifest, ...]:
    output = subprocess.run(
        [kubectl(), "kustomize", str(KUBERNETES / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return tuple(document for document in yaml.safe_load_all(output) if document)


def one(manifests: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    [found] = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def pod_templates(manifests: tuple[Manifest, ...]) -> Iterator[tuple[Manifest, Manifest]]:
    """(workload, its pod template) for every Deployment, StatefulSet and Job."""
    for manifest in manifests:
        if manifest["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield manifest, manifest["spec"]["template"]


def containers(manifests: tuple[Manifest, ...]) -> Iterator[Manifest]:
    for _, template in pod_templates(manifests):
        yield from template["spec"]["containers"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def env_value(container: Manifest, name: str) -> str:
    [value] = [item["value"] for item in container.get("env", []) if item["name"] == name]
    return str(value)


@pytest.fixture(params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> tuple[Manifest, ...]:
    return rendered(request.param)


@pytest.fixture
def api(manifests: tuple[Manifest, ...]) -> Manifest:
    return one(manifests, "Deployment", "orders")


@pytest.fixture
def server(api: Manifest) -> Manifest:
    [container] = [
        c for c in api["spec"]["template"]["spec"]["containers"] if c["name"] == "orders"
    ]
    return container


def test_there_are_a_local_and_an_aws_overlay() -> None:
    assert {"local", "aws"} <= set(OVERLAYS)


def test_probe_paths_are_routes_of_the_app(
    manifests: tuple[Manifest, ...], server: Manifest
) -> None:
    served = {
        route.path
        for route in routes(b"{}")
        if isinstance(route, Route) and route.methods and "GET" in route.methods
    }
    probes = {
        kind: server[kind]["httpGet"]["path"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes["readinessProbe"] == "/health/ready"
    assert probes["livenessProbe"] == "/health/live"
    assert set(probes.values()) <= served
    ports = {port["name"]: port["containerPort"] for port in server["ports"]}
    for kind in probes:
        assert server[kind]["httpGet"]["port"] in ports
    for ingress in (m for m in manifests if m["kind"] == "Ingress"):
        health = (
            ingress["metadata"]
            .get("annotations", {})
            .get("alb.ingress.kubernetes.io/healthcheck-path")
        )
        assert health is None or health in served


def test_the_grace_period_covers_the_pause_and_the_graceful_timeout(
    manifests: tuple[Manifest, ...], api: Manifest, server: Manifest
) -> None:
    grace = api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    sleep, seconds = server["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep"
    pause = int(seconds)
    graceful = int(env_value(server, "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN"))
    # The pause lets endpoints and load balancers forget the pod before SIGTERM.
    assert pause >= 5
    # Room for the lifespan's shutdown (closing the pool and the HTTP client) after that.
    assert pause + graceful + 5 <= grace
    for ingress in (m for m in manifests if m["kind"] == "Ingress"):
        attributes = (
            ingress["metadata"]
            .get("annotations", {})
            .get("alb.ingress.kubernetes.io/target-group-attributes", "")
        )
        delay = re.search(r"deregistration_delay\.timeout_seconds=(\d+)", attributes)
        if delay:
            assert int(delay.group(1)) <= grace


def test_a_rollout_never_lowers_capacity(api: Manifest, server: Manifest) -> None:
    spec = api["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # The Job migrates; a replica that migrated on start would race the rollout.
    assert env_value(server, "MIGRATE_ON_START") == "false"


def test_selectors_meet_across_the_objects(
    manifests: tuple[Manifest, ...], api: Manifest, server: Manifest
) -> None:
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert matches(api["spec"]["selector"]["matchLabels"], pod_labels)

    service = one(manifests, "Service", "orders")
    assert matches(service["spec"]["selector"], pod_labels)
    port_names = {port["name"] for port in server["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names

    job = one(manifests, "Job", "orders-migrate")
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    assert not matches(service["spec"]["selector"], job_labels), "the Service would pick the Job"

    hpa = one(manifests, "HorizontalPodAutoscaler", "orders")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        "orders",
    )
    assert hpa["spec"]["minReplicas"] >= 2

    pdb = one(manifests, "PodDisruptionBudget", "orders")
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert not matches(pdb["spec"]["selector"]["matchLabels"], job_labels)

    policy = one(manifests, "NetworkPolicy", "orders")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
    assert matches(policy["spec"]["podSelector"]["matchLabels"], job_labels)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}

    services = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Service"}
    for ingress in (m for m in manifests if m["kind"] == "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services
                names = {port["name"] for port in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["name"] in names


def test_the_job_runs_the_image_of_the_deployment(
    manifests: tuple[Manifest, ...], server: Manifest
) -> None:
    job = one(manifests, "Job", "orders-migrate")
    [migrate] = job["spec"]["template"]["spec"]["containers"]
    assert migrate["image"] == server["image"]
    assert migrate["args"] == ["alembic", "upgrade", "head"]


def test_no_image_floats(manifests: tuple[Manifest, ...]) -> None:
    for container in containers(manifests):
        image = container["image"]
        name, _, tag = image.rpartition(":")
        pinned = "@sha256:" in image or ("/" not in tag and name and tag != "latest")
        assert pinned, f"{container['name']}: {image} has no tag or digest, or is :latest"


def test_the_aws_overlay_takes_the_image_scripts_publish_ecr_pushes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    published = re.search(r"scripts/publish --ecr --repository (\S+)", workflow)
    assert published, "the release workflow publishes to ECR"
    spec = one(rendered("aws"), "Deployment", "orders")["spec"]["template"]["spec"]
    image = spec["containers"][0]["image"]
    found = ECR_IMAGE.match(image)
    assert found, image
    # The repository the release pushes to, at this version's tag (or the digest that
    # `scripts/publish` prints, which pins it further).
    assert found["repository"] == published.group(1)
    assert image.endswith(f":{project['version']}") or "@sha256:" in image


def test_no_secret_values_are_written_down(manifests: tuple[Manifest, ...]) -> None:
    assert not [m for m in manifests if m["kind"] == "Secret"]
    for container in containers(manifests):
        for item in container.get("env", []):
            if SECRET_NAME.search(item["name"]) and "value" in item:
                raise AssertionError(f"{item['name']} is written in plain text")
            if "value" in item:
                assert not CREDENTIALS_IN_URL.search(str(item["value"]))
            reference = item.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                assert reference["name"] in OPERATOR_SECRETS
    for config_map in (m for m in manifests if m["kind"] == "ConfigMap"):
        for key, value in config_map.get("data", {}).items():
            assert not SECRET_NAME.search(key), f"{key} belongs in a Secret"
            assert not CREDENTIALS_IN_URL.search(value)


def test_config_names_are_settings_the_service_reads(manifests: tuple[Manifest, ...]) -> None:
    known = {
        name.upper()
        for settings in (Settings, StartupSettings, ServerLimits)
        for name in settings.model_fields
    } | UVICORN_VARIABLES
    config_maps = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "ConfigMap"}
    api = one(manifests, "Deployment", "orders")["spec"]["template"]["spec"]
    for container in api["containers"]:
        for item in container.get("env", []):
            assert item["name"] in known, item["name"]
        for source in container.get("envFrom", []):
            name = source["configMapRef"]["name"]
            assert name in config_maps, f"{name} is not rendered"
            assert set(config_maps[name]["data"]) <= known
    for volume in api["volumes"]:
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            assert name in config_maps or name in OPERATOR_CONFIG_MAPS


def test_pods_are_locked_down(manifests: tuple[Manifest, ...]) -> None:
    for workload, template in pod_templates(manifests):
        spec = template["spec"]
        name = workload["metadata"]["name"]
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            resources = container.get("resources", {})
            assert resources.get("requests"), name
            assert resources.get("limits", {}).get("memory"), name
            if container["image"].startswith("docker.io/library/postgres"):
                continue  # the local overlay's database runs as the image wants
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name


def test_the_manifests_run_as_the_image_user() -> None:
    containerfile = (ROOT / "Containerfile").read_text()
    uid = re.search(r"^USER (\d+):(\d+)$", containerfile, re.MULTILINE)
    assert uid
    spec = one(rendered("local"), "Deployment", "orders")["spec"]["template"]["spec"]
    assert str(spec["securityContext"]["runAsUser"]) == uid.group(1)
    assert str(spec["securityContext"]["runAsGroup"]) == uid.group(2)
