"""The Kubernetes manifests in deploy/k8s: schema-valid (offline, strict) and as the issue asks.

Schema validation uses `kubernetes-validate`, which bundles the Kubernetes JSON schemas, so no
cluster or network is needed. The property checks below only need PyYAML: they make a later
edit that drops a replica, a probe, a limit or a hardening setting fail here.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import load_settings

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - depends on the test extras
    kubernetes_validate = None

needs_validator = pytest.mark.skipif(
    kubernetes_validate is None,
    reason="kubernetes-validate is not installed (pip install kubernetes-validate)",
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
NAME = "cardiac-ct-cds"
LABELS = {"app.kubernetes.io/name": NAME}
# 1.30 is the oldest supported (preStop `sleep`); also check a newer release.
K8S_VERSIONS = ("1.30", "1.33")


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


KUSTOMIZATION = load(K8S / "kustomization.yaml")[0]
RESOURCE_FILES = [K8S / name for name in KUSTOMIZATION["resources"]]
EXAMPLE_FILES = sorted(K8S.glob("*.example.yaml"))
ALL_FILES = RESOURCE_FILES + EXAMPLE_FILES


def resource(kind: str, files: list[Path] = RESOURCE_FILES) -> dict[str, Any]:
    found = [doc for path in files for doc in load(path) if doc["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


DEPLOYMENT = resource("Deployment")
POD = DEPLOYMENT["spec"]["template"]["spec"]
CONTAINER = POD["containers"][0]


def test_kustomization_lists_exactly_the_manifests_present() -> None:
    assert KUSTOMIZATION["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert KUSTOMIZATION["kind"] == "Kustomization"
    listed = KUSTOMIZATION["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    present = {
        p.name
        for p in K8S.glob("*.y*ml")
        if p.name != "kustomization.yaml" and not p.name.endswith(".example.yaml")
    }
    assert set(listed) == present
    assert "namespace" not in KUSTOMIZATION, "the base must stay namespace-agnostic"


def test_examples_are_kept_out_of_the_kustomization() -> None:
    names = {p.name for p in EXAMPLE_FILES}
    assert "secret.example.yaml" in names
    assert not names & set(KUSTOMIZATION["resources"])
    assert all(doc["kind"] != "Secret" for p in RESOURCE_FILES for doc in load(p))


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_one_labelled_namespace_agnostic_object_per_file(path: Path) -> None:
    docs = load(path)
    assert len(docs) == 1, f"{path.name}: one object per file"
    metadata = docs[0]["metadata"]
    assert metadata["labels"].items() >= LABELS.items()
    assert "namespace" not in metadata


@needs_validator
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_schema_valid_strict(path: Path, version: str) -> None:
    for doc in load(path):
        kubernetes_validate.validate(doc, version, strict=True)


@needs_validator
@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda d: d["spec"].update(replicas="two"), id="replicas-not-integer"),
        pytest.param(
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={}),
            id="misspelt-field",
        ),
    ],
)
def test_validator_rejects_a_broken_manifest(break_it: Any) -> None:
    broken = copy.deepcopy(DEPLOYMENT)
    break_it(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_deployment_runs_replicas_of_the_released_image() -> None:
    assert DEPLOYMENT["spec"]["replicas"] >= 2
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"] == LABELS
    assert DEPLOYMENT["spec"]["template"]["metadata"]["labels"].items() >= LABELS.items()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert CONTAINER["image"] == f"{NAME}:{version['version']}"
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in CONTAINER["ports"]
    assert 20 <= POD["terminationGracePeriodSeconds"] <= 60  # audit queue drained on SIGTERM


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_call_health(probe: str) -> None:
    check = CONTAINER[probe]
    assert check["httpGet"] == {"path": "/health", "port": "http"}
    assert check["timeoutSeconds"] >= 2  # /health pings the database with a 2 s budget


def test_resources_requested_and_limited() -> None:
    resources = CONTAINER["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) >= {"cpu", "memory"}, bound
    assert resources["requests"]["memory"] == "192Mi"
    assert resources["limits"]["memory"] == "256Mi"


def test_pods_are_hardened() -> None:
    assert POD["automountServiceAccountToken"] is False
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert POD["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = CONTAINER["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 10001
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_volumes_config_read_only_state_and_tmp_writable() -> None:
    mounts = {m["mountPath"]: m for m in CONTAINER["volumeMounts"]}
    volumes = {v["name"]: v for v in POD["volumes"]}
    config = mounts["/etc/cardiac-ct-cds"]
    assert config["readOnly"] is True
    configmap = resource("ConfigMap")
    assert volumes[config["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert "config.toml" in configmap["data"]
    for path in ("/var/lib/cardiac-ct-cds", "/tmp"):
        assert "emptyDir" in volumes[mounts[path]["name"]], path


def test_database_and_redis_urls_come_from_the_secret() -> None:
    env = {e["name"]: e for e in CONTAINER["env"]}
    example = resource("Secret", EXAMPLE_FILES)
    for variable in ("CARDIAC_CDS_STORAGE__URL", "CARDIAC_CDS_CACHE__REDIS_URL"):
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == example["metadata"]["name"], variable
        assert ref["key"] in example["stringData"], variable
        assert "value" not in env[variable]


def test_replicas_spread_across_nodes() -> None:
    spread = POD.get("topologySpreadConstraints", [])
    anti = POD.get("affinity", {}).get("podAntiAffinity", {})
    by_node = [c for c in spread if c["topologyKey"] == "kubernetes.io/hostname"]
    assert by_node or anti, "replicas must be spread across nodes"
    for constraint in by_node:
        assert constraint["labelSelector"]["matchLabels"] == LABELS


def test_service_targets_the_http_port() -> None:
    service = resource("Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == LABELS
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]


def test_disruption_budget_keeps_one_pod() -> None:
    pdb = resource("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] >= 1
    assert pdb["spec"]["minAvailable"] < DEPLOYMENT["spec"]["replicas"]
    assert pdb["spec"]["selector"]["matchLabels"] == LABELS


def test_autoscaler_scales_the_deployment_on_cpu() -> None:
    hpa = resource("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": DEPLOYMENT["metadata"]["name"],
    }
    assert spec["minReplicas"] >= 2
    assert spec["maxReplicas"] > spec["minReplicas"]
    cpu = [m for m in spec["metrics"] if m["type"] == "Resource"]
    assert cpu[0]["resource"]["name"] == "cpu"
    assert cpu[0]["resource"]["target"]["type"] == "Utilization"


def test_network_policy_restricts_both_directions() -> None:
    policy = resource("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == LABELS
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    # No allow-all rule: every rule names its peers and its ports.
    for rule in policy["ingress"]:
        assert rule["from"] and rule["ports"]
    for rule in policy["egress"]:
        assert rule["to"] and rule["ports"]
    assert {(p["protocol"], p["port"]) for r in policy["ingress"] for p in r["ports"]} == {
        ("TCP", 8080)
    }
    assert {(p["protocol"], p["port"]) for r in policy["egress"] for p in r["ports"]} == {
        ("UDP", 53),
        ("TCP", 53),
        ("TCP", 5432),
        ("TCP", 6379),
        ("TCP", 443),
    }


def test_configmap_is_a_valid_production_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [v for v in os.environ if v.startswith("CARDIAC_CDS_")]:
        monkeypatch.delenv(variable)
    config = tmp_path / "config.toml"
    config.write_text(resource("ConfigMap")["data"]["config.toml"], encoding="utf-8")

    alone = load_settings(config)
    assert alone.environment == "production"
    assert alone.auth.enabled and alone.auth.clients
    assert str(alone.state_dir) == "/var/lib/cardiac-ct-cds"
    # Without the Secret it must not quietly fall back to a local SQLite file.
    assert alone.storage.url.startswith("postgresql+psycopg://")
    assert alone.cache.redis_url

    storage = "postgresql+psycopg://cds:pw@postgresql:5432/cds"
    monkeypatch.setenv("CARDIAC_CDS_STORAGE__URL", storage)
    monkeypatch.setenv("CARDIAC_CDS_CACHE__REDIS_URL", "redis://redis:6379/0")
    wired = load_settings(config)
    assert wired.storage.url == storage
    assert wired.cache.redis_url == "redis://redis:6379/0"
    assert wired.storage.audit_retention_days == alone.storage.audit_retention_days
