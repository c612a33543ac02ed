"""deploy/k8s: the kustomize base validates against the Kubernetes schemas (offline, from the
kubernetes-validate package) and agrees with the code it runs: probes on the API's routes,
settings the service reads, grace periods longer than the drains.

There is no cluster and no kustomize binary on the development machines: the base is rendered
here by loading the resources kustomization.yaml lists, and the test refuses a kustomization
that uses anything else (a transformer this renderer would silently ignore)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from api.app import create_app
from durable_orchestrator.cli.config import env_names, is_secret
from durable_orchestrator.cli.main import app as cli_app
from durable_orchestrator.settings import Settings
from worker import SHUTDOWN_GRACE

BASE = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
K8S_VERSIONS = ("1.30", "1.37")  # oldest and newest minor this base is checked against
RENDERED_KEYS = {"apiVersion", "kind", "resources"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render(base: Path = BASE) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - RENDERED_KEYS
    assert not unsupported, f"render() does not apply {unsupported}; teach it or drop them"
    return [doc for name in kustomization["resources"] for doc in _documents(base / name)]


@pytest.fixture(scope="module")
def resources() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def example_secret() -> dict[str, Any]:
    (secret,) = _documents(BASE / "secret.example.yaml")
    return secret


def _one(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_every_resource_passes_the_kubernetes_schemas(
    resources: list[dict[str, Any]], example_secret: dict[str, Any]
) -> None:
    kinds = sorted((r["kind"], r["metadata"]["name"]) for r in resources)
    assert kinds == [
        ("ConfigMap", "orchestrator-config"),
        ("Deployment", "orchestrator-api"),
        ("Deployment", "orchestrator-worker"),
        ("Job", "orchestrator-migrate"),
        ("PodDisruptionBudget", "orchestrator-api"),
        ("PodDisruptionBudget", "orchestrator-worker"),
        ("Service", "orchestrator-api"),
    ]
    for resource in [*resources, example_secret]:
        for version in K8S_VERSIONS:
            # strict: unknown fields (a typo such as `readinesProbe`) fail too
            kubernetes_validate.validate(resource, version, strict=True)


def test_the_validator_rejects_a_broken_manifest(resources: list[dict[str, Any]]) -> None:
    """The schemas are really applied: a typo'd field and a wrong type both fail."""
    typo = copy.deepcopy(_one(resources, "Deployment", "orchestrator-api"))
    _container(typo)["readinesProbe"] = _container(typo).pop("readinessProbe")
    wrong_type = copy.deepcopy(_one(resources, "Deployment", "orchestrator-worker"))
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "45s"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, "1.37", strict=True)


def test_api_probes_are_the_health_routes_on_the_served_port(
    resources: list[dict[str, Any]],
) -> None:
    api = _container(_one(resources, "Deployment", "orchestrator-api"))
    port = int(api["command"][api["command"].index("--port") + 1])
    (http,) = api["ports"]
    assert (http["name"], http["containerPort"]) == ("http", port)
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    routes = set(create_app(Settings()).openapi()["paths"])
    assert {"/healthz", "/readyz"} <= routes


def test_worker_liveness_is_its_metrics_port(resources: list[dict[str, Any]]) -> None:
    worker = _container(_one(resources, "Deployment", "orchestrator-worker"))
    env = {e["name"]: e["value"] for e in worker["env"]}
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports["metrics"] == int(env["ORCH_WORKER_METRICS_PORT"])
    assert ports["sdk-metrics"] == int(env["ORCH_TEMPORAL_METRICS_PORT"])
    assert worker["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_grace_periods_outlast_the_drains(resources: list[dict[str, Any]]) -> None:
    worker = _one(resources, "Deployment", "orchestrator-worker")["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > SHUTDOWN_GRACE.total_seconds()

    api_pod = _one(resources, "Deployment", "orchestrator-api")["spec"]["template"]["spec"]
    api = _container(_one(resources, "Deployment", "orchestrator-api"))
    drain = int(api["command"][api["command"].index("--timeout-graceful-shutdown") + 1])
    pre_stop = api["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert api_pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain


def test_selectors_reach_the_pods_they_mean(resources: list[dict[str, Any]]) -> None:
    deployments = {n: _one(resources, "Deployment", f"orchestrator-{n}") for n in ("api", "worker")}
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    for name, labels in pods.items():
        other = pods["worker" if name == "api" else "api"]
        assert _matches(deployments[name]["spec"]["selector"]["matchLabels"], labels)
        pdb = _one(resources, "PodDisruptionBudget", f"orchestrator-{name}")["spec"]["selector"]
        assert _matches(pdb["matchLabels"], labels)
        assert not _matches(pdb["matchLabels"], other)
    service = _one(resources, "Service", "orchestrator-api")
    assert _matches(service["spec"]["selector"], pods["api"])
    assert not _matches(service["spec"]["selector"], pods["worker"])
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    # At least one API replica stays through a voluntary disruption, and there are more than one.
    api_budget = _one(resources, "PodDisruptionBudget", "orchestrator-api")["spec"]
    assert api_budget["minAvailable"] < deployments["api"]["spec"]["replicas"]


def test_every_container_requests_resources(resources: list[dict[str, Any]]) -> None:
    workloads = [r for r in resources if r["kind"] in ("Deployment", "Job")]
    assert len(workloads) == 3
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            requests = container["resources"]["requests"]
            assert {"cpu", "memory"} <= set(requests), workload["metadata"]["name"]
            assert container["image"] == "orchestrator"  # one image; overlays set its tag


def test_migrate_job_runs_the_migrate_command(resources: list[dict[str, Any]]) -> None:
    job = _one(resources, "Job", "orchestrator-migrate")
    assert _container(job)["command"] == ["orchestrator", "migrate"]
    assert "migrate" in {c.name or c.callback.__name__ for c in cli_app.registered_commands}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def _setting_env_names() -> tuple[set[str], set[str]]:
    """Every variable Settings reads, and those of secret settings."""
    names: set[str] = set()
    secret: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        env = set(env_names(field_name, field).names)
        names |= env
        if is_secret(field_name, field):
            secret |= env
    return names, secret


def _env_sources(workload: dict[str, Any]) -> tuple[set[str], set[str]]:
    container = _container(workload)
    config_maps = {s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s}
    secrets = {s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s}
    return config_maps, secrets


def test_environment_names_only_settings_and_keeps_secrets_in_the_secret(
    resources: list[dict[str, Any]], example_secret: dict[str, Any]
) -> None:
    known, secret_names = _setting_env_names()
    config = _one(resources, "ConfigMap", "orchestrator-config")["data"]
    explicit = {
        e["name"]
        for r in resources
        if r["kind"] in ("Deployment", "Job")
        for e in _container(r).get("env", [])
    }
    for name in [*config, *example_secret["stringData"], *explicit]:
        assert name in known, f"{name} is not a setting (durable_orchestrator/settings.py)"
    assert not set(config) & secret_names, "secret settings belong in the Secret"
    assert {"OPENAI_API_KEY", "ORCH_WEBHOOK_SECRET"} <= set(example_secret["stringData"])
    for workload in (r for r in resources if r["kind"] in ("Deployment", "Job")):
        config_maps, secrets = _env_sources(workload)
        assert config_maps == {"orchestrator-config"}
        assert secrets == {example_secret["metadata"]["name"]}


def test_the_configured_settings_start_in_production_only_with_real_secrets(
    resources: list[dict[str, Any]], example_secret: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _one(resources, "ConfigMap", "orchestrator-config")["data"]
    for name, value in {**config, **example_secret["stringData"]}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="ORCH_WEBHOOK_SECRET"):
        Settings()  # the example's placeholder is refused
    monkeypatch.setenv("ORCH_WEBHOOK_SECRET", "4f1c0b6a9e2d7c3b8a5f6e1d0c9b8a7f")
    settings = Settings()
    assert settings.environment == "production"
    assert settings.temporal_address == config["TEMPORAL_ADDRESS"]
    assert settings.database_url == example_secret["stringData"]["DATABASE_URL"]
    assert settings.task_queue == config["ORCH_TASK_QUEUE"]
