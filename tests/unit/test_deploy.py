"""The deployment files, checked without a Docker engine or a cluster: the Dockerfile's stages,
the wheel they install, docker-compose.yml's services, and the Kubernetes manifests validated
offline against the Kubernetes schemas (kubernetes-validate); every probe path and port is one
the code serves and every environment variable a setting that exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from connector.config import ENV_PREFIX, ObservabilitySettings, ServeSettings, Settings
from connector.metrics import Metrics, _ProbeHTTPServer
from connector.serve.api import create_app

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
IMAGE_VARIABLES = {"HEALTHCHECK_PORT"}  # read by the image's HEALTHCHECK, not a setting
SERVE_PORT = ServeSettings().port
METRICS_PORT = ObservabilitySettings().metrics_port


def _served_by_daemon(path: str) -> bool:
    server = _ProbeHTTPServer(("127.0.0.1", 0), Metrics(), lambda: True)
    try:
        return server.route(path)[0] != 404
    finally:
        server.server_close()


def _served_by_api(path: str) -> bool:
    app = create_app(Settings(tables=[{"name": "documents", "content": ["body"]}]))
    return path in {getattr(route, "path", None) for route in app.routes}


def _is_setting(name: str) -> bool:
    """CONNECTOR_<SECTION>__<SETTING> names a field of the settings."""
    if not name.startswith(ENV_PREFIX):
        return False
    section, _, setting = name.removeprefix(ENV_PREFIX).lower().partition("__")
    field = Settings.model_fields.get(section)
    if field is None or not setting:
        return False
    return setting in getattr(field.annotation, "model_fields", {})


# --------------------------------------------------------------------------- the image


def test_the_dockerfile_is_multi_stage_slim_unprivileged_and_probes_a_served_path() -> None:
    parsed = DockerfileParser(str(ROOT / "Dockerfile"))
    steps = [(i["instruction"], i["value"]) for i in parsed.structure]
    stages = [value for kind, value in steps if kind == "FROM"]
    assert len(stages) == 2 and all("-slim" in s for s in stages), stages
    assert stages[0].endswith("AS build") and stages[1].endswith("AS runtime")
    runtime = steps[[v for _k, v in steps].index(stages[1]) :]
    users = [value for kind, value in runtime if kind == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    assert ("COPY", "--from=build /opt/connector /opt/connector") in runtime
    for kind, value in steps:  # what the build stage copies exists
        if kind == "COPY" and not value.startswith("--from"):
            assert all((ROOT / source).exists() for source in value.split()[:-1]), value
    exposed = {int(p) for kind, value in runtime if kind == "EXPOSE" for p in value.split()}
    assert exposed == {SERVE_PORT, METRICS_PORT}
    check = next(value for kind, value in runtime if kind == "HEALTHCHECK")
    assert "/healthz" in check and _served_by_daemon("/healthz") and _served_by_api("/healthz")
    assert f"HEALTHCHECK_PORT={METRICS_PORT}" in " ".join(v for k, v in runtime if k == "ENV")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    default = re.search(r"^ARG EXTRAS=(\S+)$", parsed.content, re.MULTILINE)
    assert default is not None and set(default[1].split(",")) <= set(extras)
    assert '".[${EXTRAS}]"' in parsed.content
    assert "local" in extras and "--build-arg EXTRAS=serve,local" in parsed.content
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# --------------------------------------------------------------------------- compose


def test_compose_runs_the_daemon_and_the_api_on_the_ports_and_probes_they_serve() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    daemon, api = services["connector"], services["serve"]
    assert daemon["build"]["dockerfile"] == "Dockerfile" and api["image"] == daemon["image"]
    assert daemon["command"][0] == "run" and api["command"][0] == "serve"
    assert f"{_LOOPBACK}:{SERVE_PORT}:{SERVE_PORT}" in api["ports"]
    assert f"{_LOOPBACK}:{METRICS_PORT}:{METRICS_PORT}" in daemon["ports"]
    for service, port, served in ((daemon, METRICS_PORT, _served_by_daemon),
                                  (api, SERVE_PORT, _served_by_api)):  # fmt: skip
        probe = " ".join(service["healthcheck"]["test"])
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", probe)
        assert url and int(url[1]) == port and served(url[2]), probe
        for name in service["environment"]:
            assert _is_setting(name) or name in IMAGE_VARIABLES, name
    assert api["environment"]["CONNECTOR_SERVE__PORT"] == str(SERVE_PORT)


_LOOPBACK = "${PUBLISH_ADDRESS:-127.0.0.1}"  # the opt-in for other addresses is documented
_DEFAULT = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")  # compose's ${VAR:-default}


def _published_address(port: str | dict[str, Any]) -> str:
    """The host address a compose port is published on, with no variable set ("" = all)."""
    if isinstance(port, dict):  # the long syntax
        return str(port.get("host_ip", ""))
    text = _DEFAULT.sub(lambda found: found[2] or "", str(port))
    parts = text.rsplit(":", 2)  # [address:]host port:container port, address maybe [::1]
    return parts[0].strip("[]") if len(parts) == 3 else ""


def test_compose_publishes_every_port_on_loopback_unless_told_otherwise() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    published = {
        f"{name} {port}": _published_address(port)
        for name, service in services.items()
        for port in service.get("ports", [])
    }
    assert {"postgres", "redis", "connector", "serve"} <= {p.split()[0] for p in published}
    exposed = {port: address for port, address in published.items()
               if address not in ("127.0.0.1", "::1", "localhost")}  # fmt: skip
    assert not exposed, f"published beyond loopback by default: {exposed}"
    assert _published_address("8000:8000") == "" and _published_address("[::]:1:1") == "::"


# --------------------------------------------------------------------------- Kubernetes


def _documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        found += [d for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d]
    return found


def _one(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize(
    "document", _documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


def test_the_manifests_match_what_the_code_serves_and_reads() -> None:
    config = _one("ConfigMap", "connector-config")["data"]["config.toml"]
    settings = Settings(**tomllib.loads(config))  # the file both Deployments read
    assert settings.tables
    daemon = _one("Deployment", "connector-daemon")["spec"]
    assert daemon["replicas"] == 1 and daemon["strategy"]["type"] == "Recreate"
    api = _one("Deployment", "connector-api")["spec"]
    assert api["replicas"] >= 2
    for spec, port, served in ((daemon, settings.observability.metrics_port, _served_by_daemon),
                               (api, settings.serve.port, _served_by_api)):  # fmt: skip
        pod = spec["template"]["spec"]
        container = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert list(ports.values()) == [port]
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path and served(path) and ports[get["port"]] == port
        assert container["lifecycle"]["preStop"]["exec"]["command"]
        grace = pod["terminationGracePeriodSeconds"]
        assert grace > settings.pipeline.shutdown_timeout_s + 5
        limits = container["resources"]["limits"]
        assert container["resources"]["requests"]["memory"] and limits["memory"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["envFrom"][0]["secretRef"]["name"] == "connector-secrets"
        for variable in container.get("env", []):
            assert _is_setting(variable["name"]) or variable["name"] in IMAGE_VARIABLES
    # The daemon went to 187 MB through a 200,000-row transaction (bench/): its limit holds it.
    assert daemon["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "512Mi"
    for name in _one("Secret", "connector-secrets")["stringData"]:
        assert _is_setting(name), name
    service = _one("Service", "connector-api")["spec"]
    assert service["ports"][0]["targetPort"] == "http"
    scaler = _one("HorizontalPodAutoscaler", "connector-api")["spec"]
    assert scaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "connector-api"}  # fmt: skip
