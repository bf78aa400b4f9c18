"""deploy/: the Kubernetes manifests against the Kubernetes API schemas (kubernetes-validate,
offline), the compose file against the Compose JSON schema (vendored under
tests/deploy/schemas/), and the Dockerfile structurally. No container engine or cluster runs
here: these are schema and structure checks only."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from aggregator.config import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.31.0"     # a version kubernetes-validate ships schemas for
COMPOSE_SCHEMA = Path(__file__).with_name("schemas") / "compose-spec" / "compose_spec.json"
SECRET_WORDS = re.compile(r"(password|passwd|secret|token|api[_-]?key)\s*[=:]\s*\S+", re.IGNORECASE)


def _documents():
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for n, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document:
                yield pytest.param(document, id=f"{path.name}#{n}")


@pytest.mark.parametrize("document", list(_documents()))
def test_kubernetes_manifests_validate_against_the_api_schemas(document):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"{document['kind']} {document['metadata']['name']}: {err.message} at {list(err.path)}")


def test_a_broken_manifest_is_caught():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment["spec"]["replicas"] = 3
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def _by_kind():
    out = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                out.setdefault(document["kind"], []).append(document)
    return out


def test_the_deployment_has_probes_config_by_environment_and_the_database_url_from_a_secret():
    kinds = _by_kind()
    (deployment,) = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in container["env"]}
    assert env["V2X_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "v2x-database"
    assert env["V2X_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert {"configMapRef": {"name": "v2x-config"}} in container["envFrom"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert deployment["spec"]["replicas"] >= 2
    # the secret never travels in plain config
    for document in kinds["ConfigMap"]:
        assert "DATABASE_URL" not in json.dumps(document) and "postgresql://" not in json.dumps(document)
    (job,) = kinds["Job"]
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["migrate"]
    assert migrate["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "v2x-database"
    services = {s["metadata"]["name"]: s for s in kinds["Service"]}
    assert services["v2x-ocpp"]["spec"]["type"] == "LoadBalancer"
    ports = {p["name"] for p in container["ports"]}
    for service in services.values():
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_the_configmap_settings_load_and_enable_the_cluster():
    (config_map,) = _by_kind()["ConfigMap"]
    data = tomllib.loads(config_map["data"]["v2x.toml"])
    data["ocpp"].pop("cert_file"), data["ocpp"].pop("key_file")   # mounted from a Secret at run time
    data["ocpp"]["security_profile"] = 0
    settings = Settings.model_validate(data)
    assert settings.cluster.enabled and settings.metrics.host == "0.0.0.0"
    # probes and Services reach the pod's IP, not its loopback
    assert settings.api.host == "0.0.0.0"
    assert config_map["data"]["V2X_CLUSTER_ENABLED"] == "true"
    container_toml = tomllib.loads((DEPLOY / "v2x.container.toml").read_text())
    assert Settings.model_validate(container_toml).api.host == "0.0.0.0"


def test_kustomization_lists_every_manifest_but_the_secret_example():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    manifests = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kustomization["resources"]) == manifests


def _compose():
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_file_validates_against_the_compose_schema():
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(_compose())]
    assert not errors, errors
    broken = _compose()
    broken["services"]["aggregator"]["depends_on"]["migrate"]["condition"] = "when_it_feels_like_it"
    assert list(validator.iter_errors(broken)), "the schema check must catch a bad condition"


def test_compose_brings_up_the_stack_with_a_migration_first_and_dashboards_provisioned():
    services = _compose()["services"]
    assert {"aggregator", "postgres", "prometheus", "grafana", "migrate"} <= set(services)
    assert services["migrate"]["command"] == ["migrate"]
    assert services["aggregator"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["aggregator"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    mounts = {m.split(":")[1]: m.split(":")[0] for m in services["grafana"]["volumes"] if m.startswith("./")}
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]).resolve() == DEPLOY / "grafana" / "provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/v2x.yml").read_text())
    dashboards_at = provider["providers"][0]["options"]["path"]
    assert (DEPLOY / mounts[dashboards_at]).resolve() == DEPLOY / "grafana" / "dashboards"
    for mount in services["prometheus"]["volumes"]:
        if mount.startswith("./"):
            assert (DEPLOY / mount.split(":")[0]).is_file(), mount
    prometheus = yaml.safe_load((DEPLOY / "compose/prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["aggregator:9464"]
    for service in services.values():          # published on the loopback only
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def _dockerfile() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    return [line for line in text.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]


def test_dockerfile_is_slim_non_root_with_a_healthcheck_and_no_secrets():
    lines = _dockerfile()
    instructions = [line.split()[0].upper() for line in lines]
    froms = [line for line in lines if line.upper().startswith("FROM ")]
    assert all("slim" in line for line in froms), froms
    final_stage = lines[max(i for i, line in enumerate(lines) if line.upper().startswith("FROM ")):]
    users = [line.split()[1] for line in final_stage if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must not run as root"
    healthchecks = [line for line in final_stage if line.upper().startswith("HEALTHCHECK ")]
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0]
    assert "ENTRYPOINT" in instructions
    for line in lines:
        if line.upper().startswith(("ENV ", "ARG ", "LABEL ")):
            assert not SECRET_WORDS.search(line), line
            assert "postgresql://" not in line, line
    assert not any(line.upper().startswith("ADD ") and "http" in line for line in lines), "no downloads at build"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ".git" in ignore and ".venv" in ignore


def test_image_copies_what_it_installs():
    """Every COPY source exists (the build context is the repository root)."""
    for line in _dockerfile():
        if line.upper().startswith("COPY ") and "--from" not in line:
            *sources, _target = line.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), source
