"""The Kubernetes manifests under deploy/: rendered from the settings, valid against the API schema.

* The committed files equal a fresh render of the default settings (``churnops deploy render``), so the
  figures in the manifests are the settings' figures and cannot drift from them.
* Every Kubernetes object validates (strict: unknown fields fail) against the API schema bundled with
  ``kubernetes-validate``, for the oldest and the newest Kubernetes release it covers that we target.
* The dask-kubernetes custom resources (no schema in that bundle) validate against the operator's own CRD
  schemas (shipped in the ``dask-kubernetes`` wheel, dev extra), closed against unknown fields; their
  embedded pod and service specs also against the core API schema.
* ``kubectl kustomize`` builds both kustomizations into exactly the rendered objects.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from churn_assets.deployment import manifests as m
from churn_assets.settings import DeploymentSettings, ServingSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CUSTOM = {"DaskCluster", "DaskAutoscaler"}
NOT_OBJECTS = {"dagster/values.yaml"}  # Helm values, not Kubernetes objects


def default_settings(**deployment: Any) -> Settings:
    """The defaults, whatever CHURNOPS_* the environment holds (explicit sections win over the env)."""
    return Settings(deployment=DeploymentSettings(**deployment), serving=ServingSettings())  # type: ignore[call-arg]


def committed_objects() -> list[tuple[str, dict[str, Any]]]:
    objects = []
    for rel in m.manifests(default_settings()):
        if rel in NOT_OBJECTS:
            continue
        for doc in yaml.safe_load_all((DEPLOY / rel).read_text()):
            if doc["kind"] != "Kustomization":
                objects.append((rel, doc))
    return objects


def find(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def test_committed_files_equal_the_render_of_the_settings() -> None:
    assert m.stale(default_settings(), DEPLOY) == [], "re-render with `churnops deploy render --out deploy`"


def test_render_is_complete_and_cli_check_agrees(tmp_path: Path) -> None:
    written = m.write(default_settings(), tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(m.render(default_settings()))
    (tmp_path / "k8s/serving.yaml").write_text("changed\n")
    assert m.stale(default_settings(), tmp_path) == ["k8s/serving.yaml"]
    churnops = str(Path(__import__("sys").executable).with_name("churnops"))
    proc = subprocess.run(
        [churnops, "deploy", "check", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and "k8s/serving.yaml" in proc.stderr, proc.stderr
    proc = subprocess.run(
        [churnops, "deploy", "check", str(DEPLOY)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_against_the_kubernetes_api_schema(version: str) -> None:
    objects = committed_objects()
    kinds = {doc["kind"] for _, doc in objects}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "StatefulSet"} <= kinds
    for rel, doc in objects:
        if doc["kind"] in CUSTOM:
            continue
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError naming the field
        assert doc["metadata"]["namespace" if doc["kind"] != "Namespace" else "name"] == "churnops", rel


def test_the_validator_rejects_a_broken_manifest() -> None:
    """The schema check is real: a wrong type and an unknown field both fail."""
    (hpa,) = [d for d in m.serving(default_settings()) if d["kind"] == "HorizontalPodAutoscaler"]
    hpa["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError, match=r"minReplicas|two"):
        kubernetes_validate.validate(hpa, K8S_VERSIONS[-1], strict=True)
    (deployment,) = [d for d in m.serving(default_settings()) if d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="httpGett"):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def operator_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of ``kind`` from the dask-kubernetes operator's CRDs (shipped in its wheel),
    closed the way the API server prunes: an object's undeclared fields are errors, not silently dropped."""
    spec = importlib.util.find_spec("dask_kubernetes")
    assert spec is not None and spec.submodule_search_locations, (
        "dask-kubernetes (dev extra) is not installed"
    )
    crds = Path(spec.submodule_search_locations[0]) / "operator/deployment/helm/dask-kubernetes-operator/crds"
    crd = yaml.safe_load((crds / f"{kind.lower()}.yaml").read_text())
    assert crd["spec"]["group"] == "kubernetes.dask.org" and crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    root = version["schema"]["openAPIV3Schema"]
    # apiVersion, kind and metadata are implicit at the root: close what the CRD declares (spec, status)
    return {**root, "properties": {k: close(v) for k, v in root["properties"].items()}}


def close(schema: Any) -> Any:
    if isinstance(schema, list):
        return [close(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {k: close(v) for k, v in schema.items()}
    if (
        "properties" in closed
        and "additionalProperties" not in closed
        and not closed.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


def dask_objects() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s/dask/daskcluster.yaml").read_text()))
    return {"DaskCluster": find(docs, "DaskCluster"), "DaskAutoscaler": find(docs, "DaskAutoscaler")}


@pytest.mark.parametrize("kind", sorted(CUSTOM))
def test_dask_resources_validate_against_the_operator_crd_schema(kind: str) -> None:
    doc = dask_objects()[kind]
    assert doc["apiVersion"] == "kubernetes.dask.org/v1"
    schema = operator_schema(kind)
    jsonschema.validate(doc, schema)
    broken = copy.deepcopy(doc)
    broken["spec"]["unknownField"] = 1
    with pytest.raises(jsonschema.ValidationError, match="unknownField"):
        jsonschema.validate(broken, schema)


def test_dask_resources_match_the_settings_and_the_core_schema() -> None:
    objects = dask_objects()
    cluster, autoscaler = objects["DaskCluster"], objects["DaskAutoscaler"]
    d = DeploymentSettings()
    for doc in (cluster, autoscaler):
        assert doc["metadata"]["name"] == m.DASK_CLUSTER and doc["metadata"]["namespace"] == d.namespace
    spec = cluster["spec"]
    assert spec["worker"]["replicas"] == d.dask_workers_min
    # the embedded pod and service specs are core API objects: validate them as such (strict)
    for name, pod_spec in (("worker", spec["worker"]["spec"]), ("scheduler", spec["scheduler"]["spec"])):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}
        kubernetes_validate.validate(pod, K8S_VERSIONS[-1], strict=True)
        (container,) = pod_spec["containers"]
        assert container["image"] == d.image and container["args"][:2] == ["dask", name]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": spec["scheduler"]["service"],
    }
    kubernetes_validate.validate(service, K8S_VERSIONS[-1], strict=True)
    scheduler_ports = {p["name"] for p in spec["scheduler"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in spec["scheduler"]["service"]["ports"]} <= scheduler_ports
    assert spec["scheduler"]["service"]["selector"] == {
        "dask.org/cluster-name": m.DASK_CLUSTER,
        "dask.org/component": "scheduler",
    }
    worker = spec["worker"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["memory"] == d.dask_worker_memory
    assert worker["args"][worker["args"].index("--memory-limit") + 1] == d.dask_worker_memory + "B"
    assert autoscaler["spec"] == {
        "cluster": m.DASK_CLUSTER,
        "minimum": d.dask_workers_min,
        "maximum": d.dask_workers_max,
    }


def test_defaults_are_the_spec_figures() -> None:
    d = DeploymentSettings()
    assert (d.serving_min_replicas, d.serving_max_replicas) == (2, 20)
    assert (d.serving_target_cpu_percent, d.serving_target_memory_percent) == (60, 75)


@pytest.mark.parametrize(
    "figures",
    [
        {},
        {
            "serving_min_replicas": 3,
            "serving_max_replicas": 7,
            "serving_target_cpu_percent": 55,
            "serving_target_memory_percent": 80,
            "serving_pdb_min_available": 2,
            "readiness_period_seconds": 4,
            "readiness_failure_threshold": 2,
            "liveness_period_seconds": 15,
            "liveness_failure_threshold": 5,
            "probe_timeout_seconds": 3,
            "startup_timeout_seconds": 60,
        },
    ],
    ids=["defaults", "changed"],
)
def test_hpa_pdb_and_probes_equal_the_settings(figures: dict[str, int]) -> None:
    settings = default_settings(**figures)
    d = settings.deployment
    docs = m.serving(settings)
    if not figures:  # the committed file holds exactly these objects
        assert docs == list(yaml.safe_load_all((DEPLOY / "k8s/serving.yaml").read_text()))
    hpa = find(docs, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (d.serving_min_replicas, d.serving_max_replicas)
    targets = {x["resource"]["name"]: x["resource"]["target"] for x in hpa["metrics"]}
    assert targets == {
        "cpu": {"type": "Utilization", "averageUtilization": d.serving_target_cpu_percent},
        "memory": {"type": "Utilization", "averageUtilization": d.serving_target_memory_percent},
    }
    deployment = find(docs, "Deployment")
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert deployment["spec"]["replicas"] == d.serving_min_replicas
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # utilization targets are relative to the requests: both must be set
    assert container["resources"]["requests"] == {"cpu": d.serving_cpu_request, "memory": d.serving_memory}
    ready, live, startup = container["readinessProbe"], container["livenessProbe"], container["startupProbe"]
    assert ready["httpGet"] == {"path": "/readyz", "port": "http"}
    assert live["httpGet"] == startup["httpGet"] == {"path": "/livez", "port": "http"}
    assert (ready["periodSeconds"], ready["failureThreshold"]) == (
        d.readiness_period_seconds,
        d.readiness_failure_threshold,
    )
    assert (live["periodSeconds"], live["failureThreshold"]) == (
        d.liveness_period_seconds,
        d.liveness_failure_threshold,
    )
    assert ready["timeoutSeconds"] == live["timeoutSeconds"] == d.probe_timeout_seconds
    assert startup["periodSeconds"] * startup["failureThreshold"] == d.startup_timeout_seconds
    assert container["ports"] == [{"name": "http", "containerPort": settings.serving.port, "protocol": "TCP"}]
    pdb = find(docs, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == d.serving_pdb_min_available
    assert pdb["selector"] == deployment["spec"]["selector"]
    assert find(docs, "Service")["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    ("figures", "message"),
    [
        ({"serving_min_replicas": 5, "serving_max_replicas": 4}, "serving_min_replicas"),
        ({"serving_pdb_min_available": 2}, "serving_pdb_min_available"),
        ({"dask_workers_min": 3, "dask_workers_max": 2}, "dask_workers_min"),
        ({"serving_target_cpu_percent": 0}, "serving_target_cpu_percent"),
        ({"namespace": "Churn_Ops"}, "namespace"),
    ],
)
def test_inconsistent_figures_get_a_clear_error(figures: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeploymentSettings(**figures)


@pytest.mark.parametrize("folder", ["k8s", "k8s/dask"])
def test_kubectl_kustomize_builds_exactly_the_rendered_objects(folder: str) -> None:
    assert Path(KUBECTL).is_file(), (
        "kubectl (with its built-in kustomize) is required for this test and is not on PATH"
    )
    proc = subprocess.run(
        [KUBECTL, "kustomize", str(DEPLOY / folder)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    built = sorted(((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(proc.stdout)), key=str)
    expected = sorted(
        (
            (doc["kind"], doc["metadata"]["name"])
            for rel, doc in committed_objects()
            if Path(rel).parent.as_posix() == folder
        ),
        key=str,
    )
    assert built == expected


def test_dagster_helm_values() -> None:
    """Values for Dagster's chart: K8sRunLauncher, external PostgreSQL, our image everywhere, one run."""
    (values,) = yaml.safe_load_all((DEPLOY / "dagster/values.yaml").read_text())
    d = DeploymentSettings()
    image = {"repository": "churnops", "tag": "0.1.0", "pullPolicy": d.image_pull_policy}
    assert m.split_image(d.image) == ("churnops", "0.1.0")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlHost"] == "postgres"
    assert values["generatePostgresqlPasswordSecret"] is False
    (location,) = values["dagster-user-deployments"]["deployments"]
    assert (
        location["image"] == values["dagsterWebserver"]["image"] == values["dagsterDaemon"]["image"] == image
    )
    assert location["dagsterApiGrpcArgs"] == ["--module-name", "churn_assets.definitions"]
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] == 1
    # the code location's volume is the shared data claim rendered in k8s/config.yaml
    claims = [doc for _, doc in committed_objects() if doc["kind"] == "PersistentVolumeClaim"]
    assert location["volumes"][0]["persistentVolumeClaim"]["claimName"] in {
        c["metadata"]["name"] for c in claims
    }
    # the instance file for a PostgreSQL Dagster outside Kubernetes lives beside the chart values
    instance = yaml.safe_load((DEPLOY / "dagster/dagster_postgres.yaml").read_text())
    assert instance["storage"]["postgres"]["postgres_url"] == {"env": "CHURNOPS_DAGSTER_PG_URL"}
    assert instance["run_queue"]["max_concurrent_runs"] == 1


def test_image_helpers() -> None:
    assert m.split_image("registry.example:5000/team/churnops") == (
        "registry.example:5000/team/churnops",
        "latest",
    )
    assert m.split_image("registry.example:5000/team/churnops:v2") == (
        "registry.example:5000/team/churnops",
        "v2",
    )
    assert [m.dask_bytes(q) for q in ("4Gi", "512Mi", "4G", "4000000000")] == [
        "4GiB",
        "512MiB",
        "4GB",
        "4000000000",
    ]
