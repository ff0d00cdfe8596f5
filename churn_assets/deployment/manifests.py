"""The Kubernetes manifests of churnops, rendered from :class:`~churn_assets.settings.DeploymentSettings`.

:func:`manifests` builds every document as plain data; :func:`render` turns them into the YAML files that
live under ``deploy/`` (``churnops deploy render --out deploy``), and :func:`stale` lists the files of a
folder that differ from a fresh render (tests/deploy keeps the committed files equal to it). Edit the
settings (or this module), never the rendered files.

Files (relative to ``deploy/``):

* ``k8s/`` — a kustomization: namespace, the ``churnops-settings`` ConfigMap and the shared data volume,
  the serving Deployment / Service / HorizontalPodAutoscaler / PodDisruptionBudget, Redis, PostgreSQL and
  the MLflow tracking server.
* ``k8s/dask/`` — a second kustomization: the ``DaskCluster`` and ``DaskAutoscaler`` of the dask-kubernetes
  operator (applied once the operator's CRDs are installed).
* ``dagster/values.yaml`` — values for Dagster's official Helm chart (``K8sRunLauncher``, PostgreSQL
  storage, the churnops image as code location, daemon and webserver).

Secrets are never rendered: the manifests reference Secrets the operator creates (docs/scale_out.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from churn_assets.settings import Settings

Doc = dict[str, Any]

HEADER = (
    "# Rendered by `churnops deploy render` from churn_assets/settings.py (section `deployment`) and\n"
    "# churn_assets/deployment/manifests.py: edit those, then re-render; never edit this file by hand.\n"
)

APP = "churnops"
SETTINGS_CONFIGMAP = "churnops-settings"
SECRETS = "churnops-secrets"  # CHURNOPS_* URLs with credentials (Optuna, audit log), operator-made
POSTGRES_SECRET = "churnops-postgres"  # key `password`, operator-made
DAGSTER_PG_SECRET = "dagster-postgresql-secret"  # key `postgresql-password` (the chart's name), operator-made
DATA_CLAIM = "churnops-data"
DATA_MOUNT = "/data"
PG_USER = "churnops"
PG_DATABASES = ("mlflow", "dagster", "optuna")  # beside the default database `churnops` (audit log)
REDIS_PORT = 6379
PG_PORT = 5432
MLFLOW_PORT = 5000
DAGSTER_GRPC_PORT = 3030
DASK_CLUSTER = "churnops"
DASK_SCHEDULER_PORT = 8786
DASK_DASHBOARD_PORT = 8787
DASK_WORKER_DASHBOARD_PORT = 8788
CODE_LOCATION = "churn-assets"


def _meta(settings: Settings, name: str, component: str) -> Doc:
    return {
        "name": name,
        "namespace": settings.deployment.namespace,
        "labels": {"app.kubernetes.io/part-of": APP, "app.kubernetes.io/component": component},
    }


def _selector(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": APP, "app.kubernetes.io/component": component}


def split_image(image: str) -> tuple[str, str]:
    """``registry/repo:tag`` -> (``registry/repo``, ``tag``); no tag -> ``latest``."""
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return name, tag


def dask_bytes(quantity: str) -> str:
    """A Kubernetes memory quantity (``4Gi``, ``4G``, ``4096Mi``) in dask's notation (``4GiB``, ``4GB``)."""
    return quantity + "B" if quantity[-1:].isalpha() else quantity


def _claim(settings: Settings, name: str, size: str, mode: str, component: str) -> Doc:
    spec: Doc = {"accessModes": [mode], "resources": {"requests": {"storage": size}}}
    if settings.deployment.storage_class is not None:
        spec["storageClassName"] = settings.deployment.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(settings, name, component),
        "spec": spec,
    }


def _template_claim(settings: Settings, name: str, size: str) -> Doc:
    claim = _claim(settings, name, size, "ReadWriteOnce", "storage")
    return {"metadata": {"name": name}, "spec": claim["spec"]}


def _env_sources() -> list[Doc]:
    return [{"configMapRef": {"name": SETTINGS_CONFIGMAP}}, {"secretRef": {"name": SECRETS}}]


def _data_volume() -> Doc:
    return {"name": "data", "persistentVolumeClaim": {"claimName": DATA_CLAIM}}


def _data_mount() -> Doc:
    return {"name": "data", "mountPath": DATA_MOUNT}


# -- shared configuration -------------------------------------------------------------------------------
def settings_env(settings: Settings) -> dict[str, str]:
    """The ``CHURNOPS_*`` variables every churnops pod gets (ConfigMap ``churnops-settings``): state on the
    shared volume, the online store, rate limits and rollout state in Redis, MLflow over HTTP."""
    redis = f"redis://redis:{REDIS_PORT}/0"
    return {
        "CHURNOPS_HOME": f"{DATA_MOUNT}/churnops",
        "CHURNOPS_FEATURE_STORE__ONLINE_BACKEND": "redis",
        "CHURNOPS_FEATURE_STORE__REDIS_URL": redis,
        "CHURNOPS_SERVING__REDIS_URL": redis,
        "CHURNOPS_SERVING__ROLLOUT_BACKEND": "redis",
        "CHURNOPS_SERVING__HOST": "0.0.0.0",
        "CHURNOPS_SERVING__PORT": str(settings.serving.port),
        "CHURNOPS_MODELING__TRACKING_URI": f"http://mlflow:{MLFLOW_PORT}",
        "BENTOML_PORT": str(settings.serving.port),
        "BENTOML_DO_NOT_TRACK": "True",
    }


def namespace(settings: Settings) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": settings.deployment.namespace, "labels": {"app.kubernetes.io/part-of": APP}},
    }


def shared_config(settings: Settings) -> list[Doc]:
    d = settings.deployment
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(settings, SETTINGS_CONFIGMAP, "config"),
        "data": settings_env(settings),
    }
    return [configmap, _claim(settings, DATA_CLAIM, d.data_volume_size, "ReadWriteMany", "storage")]


# -- serving ---------------------------------------------------------------------------------------------
def serving(settings: Settings) -> list[Doc]:
    """The bento's Deployment (probes on BentoML's /readyz and /livez), Service, HPA and PDB."""
    d = settings.deployment
    probe = {"httpGet": {"path": "/livez", "port": "http"}, "timeoutSeconds": d.probe_timeout_seconds}
    container = {
        "name": "churn-service",
        "image": d.serving_image,
        "imagePullPolicy": d.image_pull_policy,
        "ports": [{"name": "http", "containerPort": settings.serving.port, "protocol": "TCP"}],
        # the secret is optional here: serving needs no database, only CHURNOPS_SERVING__API_KEY if set
        "envFrom": [
            {"configMapRef": {"name": SETTINGS_CONFIGMAP}},
            {"secretRef": {"name": SECRETS, "optional": True}},
        ],
        "resources": {
            "requests": {"cpu": d.serving_cpu_request, "memory": d.serving_memory},
            "limits": {"cpu": d.serving_cpu_limit, "memory": d.serving_memory},
        },
        "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": d.startup_timeout_seconds // 5},
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "timeoutSeconds": d.probe_timeout_seconds,
            "periodSeconds": d.readiness_period_seconds,
            "failureThreshold": d.readiness_failure_threshold,
        },
        "livenessProbe": {
            **probe,
            "periodSeconds": d.liveness_period_seconds,
            "failureThreshold": d.liveness_failure_threshold,
        },
        "volumeMounts": [_data_mount()],
    }
    anti_affinity = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": _selector("serving")},
                    },
                }
            ]
        }
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(settings, "churn-service", "serving"),
        "spec": {
            "replicas": d.serving_min_replicas,
            "selector": {"matchLabels": _selector("serving")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": _selector("serving")},
                "spec": {
                    "terminationGracePeriodSeconds": d.termination_grace_seconds,
                    "affinity": anti_affinity,
                    "containers": [container],
                    "volumes": [_data_volume()],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(settings, "churn-service", "serving"),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector("serving"),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(settings, "churn-service", "serving"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "churn-service"},
            "minReplicas": d.serving_min_replicas,
            "maxReplicas": d.serving_max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": name,
                        "target": {"type": "Utilization", "averageUtilization": percent},
                    },
                }
                for name, percent in (
                    ("cpu", d.serving_target_cpu_percent),
                    ("memory", d.serving_target_memory_percent),
                )
            ],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(settings, "churn-service", "serving"),
        "spec": {
            "minAvailable": d.serving_pdb_min_available,
            "selector": {"matchLabels": _selector("serving")},
        },
    }
    return [deployment, service, hpa, pdb]


# -- Redis, PostgreSQL, MLflow ---------------------------------------------------------------------------
def _service(settings: Settings, name: str, component: str, port: int) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(settings, name, component),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(component),
            "ports": [{"name": name, "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def _statefulset(settings: Settings, name: str, component: str, container: Doc, size: str) -> Doc:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(settings, name, component),
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": _selector(component)},
            "template": {"metadata": {"labels": _selector(component)}, "spec": {"containers": [container]}},
            "volumeClaimTemplates": [_template_claim(settings, "data", size)],
        },
    }


def redis(settings: Settings) -> list[Doc]:
    """Online store, rate-limit counters and rollout state; append-only file on its own volume."""
    d = settings.deployment
    ping = {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 10, "timeoutSeconds": 2}
    container = {
        "name": "redis",
        "image": d.redis_image,
        "args": ["--appendonly", "yes", "--save", "", "--dir", "/data"],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
        "readinessProbe": ping,
        "livenessProbe": ping,
        "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    return [
        _service(settings, "redis", "redis", REDIS_PORT),
        _statefulset(settings, "redis", "redis", container, d.redis_volume_size),
    ]


def postgres(settings: Settings) -> list[Doc]:
    """One PostgreSQL for the MLflow backend store, Dagster's storage, Optuna studies and the audit log."""
    d = settings.deployment
    init = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(settings, "postgres-init", "postgres"),
        "data": {"databases.sql": "".join(f"CREATE DATABASE {db} OWNER {PG_USER};\n" for db in PG_DATABASES)},
    }
    ready = {
        "exec": {"command": ["pg_isready", "-U", PG_USER, "-d", PG_USER]},
        "periodSeconds": 10,
        "timeoutSeconds": 3,
    }
    container = {
        "name": "postgres",
        "image": d.postgres_image,
        "env": [
            {"name": "POSTGRES_USER", "value": PG_USER},
            {"name": "POSTGRES_DB", "value": PG_USER},
            {
                "name": "POSTGRES_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": POSTGRES_SECRET, "key": "password"}},
            },
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
        ],
        "ports": [{"name": "postgres", "containerPort": PG_PORT}],
        "readinessProbe": ready,
        "livenessProbe": ready,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/postgresql/data"},
            {"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True},
        ],
    }
    statefulset = _statefulset(settings, "postgres", "postgres", container, d.postgres_volume_size)
    statefulset["spec"]["template"]["spec"]["volumes"] = [
        {"name": "init", "configMap": {"name": "postgres-init"}}
    ]
    return [init, _service(settings, "postgres", "postgres", PG_PORT), statefulset]


def mlflow(settings: Settings) -> list[Doc]:
    """The MLflow tracking server: backend store in PostgreSQL, artifacts proxied to its own volume."""
    d = settings.deployment
    backend = f"postgresql+psycopg2://{PG_USER}:$(POSTGRES_PASSWORD)@postgres:{PG_PORT}/mlflow"
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3}
    container = {
        "name": "mlflow",
        "image": d.image,
        "imagePullPolicy": d.image_pull_policy,
        "command": ["mlflow", "server"],
        "args": [
            "--host",
            "0.0.0.0",
            "--port",
            str(MLFLOW_PORT),
            "--workers",
            "2",
            "--backend-store-uri",
            backend,
            "--serve-artifacts",
            "--artifacts-destination",
            "/mlartifacts",
            "--allowed-hosts",
            f"mlflow,mlflow:{MLFLOW_PORT},mlflow.{d.namespace}.svc*,localhost:*",
        ],
        "env": [
            {
                "name": "POSTGRES_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": POSTGRES_SECRET, "key": "password"}},
            }
        ],
        "ports": [{"name": "http", "containerPort": MLFLOW_PORT}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "initialDelaySeconds": 30},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "volumeMounts": [{"name": "artifacts", "mountPath": "/mlartifacts"}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(settings, "mlflow", "mlflow"),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": _selector("mlflow")},
            "template": {
                "metadata": {"labels": _selector("mlflow")},
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {"name": "artifacts", "persistentVolumeClaim": {"claimName": "mlflow-artifacts"}}
                    ],
                },
            },
        },
    }
    service = _service(settings, "mlflow", "mlflow", MLFLOW_PORT)
    service["spec"]["ports"][0]["targetPort"] = "http"
    artifacts = _claim(
        settings, "mlflow-artifacts", d.mlflow_artifacts_volume_size, "ReadWriteOnce", "mlflow"
    )
    return [artifacts, deployment, service]


# -- Dask (dask-kubernetes operator) ----------------------------------------------------------------------
def dask(settings: Settings) -> list[Doc]:
    """A ``DaskCluster`` (scheduler + workers from the churnops image) and its ``DaskAutoscaler``."""
    d = settings.deployment
    scheduler_health = {"httpGet": {"path": "/health", "port": "http-dashboard"}, "periodSeconds": 10}
    scheduler = {
        "name": "scheduler",
        "image": d.image,
        "imagePullPolicy": d.image_pull_policy,
        "args": ["dask", "scheduler", "--port", str(DASK_SCHEDULER_PORT), "--dashboard-address", ":8787"],
        "ports": [
            {"name": "tcp-comm", "containerPort": DASK_SCHEDULER_PORT, "protocol": "TCP"},
            {"name": "http-dashboard", "containerPort": DASK_DASHBOARD_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": scheduler_health,
        "livenessProbe": {**scheduler_health, "initialDelaySeconds": 15},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    }
    worker = {
        "name": "worker",
        "image": d.image,
        "imagePullPolicy": d.image_pull_policy,
        "args": [
            "dask",
            "worker",
            "--name",
            "$(DASK_WORKER_NAME)",
            "--nthreads",
            "1",
            "--memory-limit",
            dask_bytes(d.dask_worker_memory),
            "--dashboard",
            "--dashboard-address",
            str(DASK_WORKER_DASHBOARD_PORT),
        ],
        "envFrom": _env_sources(),
        "ports": [{"name": "http-dashboard", "containerPort": DASK_WORKER_DASHBOARD_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": d.dask_worker_cpu, "memory": d.dask_worker_memory},
            "limits": {"cpu": d.dask_worker_cpu, "memory": d.dask_worker_memory},
        },
        "volumeMounts": [_data_mount()],
    }
    cluster = {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": _meta(settings, DASK_CLUSTER, "dask"),
        "spec": {
            "worker": {
                "replicas": d.dask_workers_min,
                "spec": {"containers": [worker], "volumes": [_data_volume()]},
            },
            "scheduler": {
                "spec": {"containers": [scheduler]},
                "service": {
                    "type": "ClusterIP",
                    "selector": {
                        "dask.org/cluster-name": DASK_CLUSTER,
                        "dask.org/component": "scheduler",
                    },
                    "ports": [
                        {
                            "name": "tcp-comm",
                            "protocol": "TCP",
                            "port": DASK_SCHEDULER_PORT,
                            "targetPort": "tcp-comm",
                        },
                        {
                            "name": "http-dashboard",
                            "protocol": "TCP",
                            "port": DASK_DASHBOARD_PORT,
                            "targetPort": "http-dashboard",
                        },
                    ],
                },
            },
        },
    }
    autoscaler = {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskAutoscaler",
        "metadata": _meta(settings, DASK_CLUSTER, "dask"),
        "spec": {"cluster": DASK_CLUSTER, "minimum": d.dask_workers_min, "maximum": d.dask_workers_max},
    }
    return [cluster, autoscaler]


# -- Dagster (official Helm chart) ------------------------------------------------------------------------
def dagster_values(settings: Settings) -> Doc:
    """Values for Dagster's Helm chart (``dagster/dagster``, the release equal to the pinned dagster)."""
    d = settings.deployment
    repository, tag = split_image(d.image)
    image = {"repository": repository, "tag": tag, "pullPolicy": d.image_pull_policy}
    env = {"envConfigMaps": [{"name": SETTINGS_CONFIGMAP}], "envSecrets": [{"name": SECRETS}]}
    return {
        "global": {"postgresqlSecretName": DAGSTER_PG_SECRET},
        "dagsterWebserver": {"image": image, **env},
        "dagster-user-deployments": {
            "enabled": True,
            "enableSubchart": True,
            "deployments": [
                {
                    "name": CODE_LOCATION,
                    "image": image,
                    "dagsterApiGrpcArgs": ["--module-name", "churn_assets.definitions"],
                    "port": DAGSTER_GRPC_PORT,
                    **env,
                    "volumes": [_data_volume()],
                    "volumeMounts": [_data_mount()],
                    # run pods inherit the code location's env, secrets and the data volume
                    "includeConfigInLaunchedRuns": {"enabled": True},
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                }
            ],
        },
        "runLauncher": {
            "type": "K8sRunLauncher",
            "config": {
                "k8sRunLauncher": {
                    "imagePullPolicy": d.image_pull_policy,
                    "loadInclusterConfig": True,
                    "runK8sConfig": {
                        "containerConfig": {
                            "resources": {
                                "requests": {"cpu": d.run_cpu, "memory": d.run_memory},
                                "limits": {"memory": d.run_memory},
                            }
                        }
                    },
                }
            },
        },
        "postgresql": {
            "enabled": False,
            "postgresqlHost": "postgres",
            "postgresqlUsername": PG_USER,
            "postgresqlDatabase": "dagster",
            "service": {"port": PG_PORT},
        },
        "generatePostgresqlPasswordSecret": False,
        "dagsterDaemon": {
            "enabled": True,
            "image": image,
            **env,
            # one run at a time: the DuckDB warehouse on the shared volume has one writer (as dagster.yaml)
            "runCoordinator": {
                "enabled": True,
                "type": "QueuedRunCoordinator",
                "config": {"queuedRunCoordinator": {"maxConcurrentRuns": 1}},
            },
        },
        "telemetry": {"enabled": False},
    }


def _kustomization(settings: Settings, resources: list[str]) -> Doc:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": settings.deployment.namespace,
        "resources": resources,
    }


# -- files -------------------------------------------------------------------------------------------------
def manifests(settings: Settings) -> dict[str, list[Doc]]:
    """Every rendered file (path relative to ``deploy/``) with its YAML documents."""
    k8s = {
        "namespace.yaml": [namespace(settings)],
        "config.yaml": shared_config(settings),
        "serving.yaml": serving(settings),
        "redis.yaml": redis(settings),
        "postgres.yaml": postgres(settings),
        "mlflow.yaml": mlflow(settings),
    }
    files = {f"k8s/{name}": docs for name, docs in k8s.items()}
    files["k8s/kustomization.yaml"] = [_kustomization(settings, list(k8s))]
    files["k8s/dask/daskcluster.yaml"] = dask(settings)
    files["k8s/dask/kustomization.yaml"] = [_kustomization(settings, ["daskcluster.yaml"])]
    files["dagster/values.yaml"] = [dagster_values(settings)]
    return files


class _Dumper(yaml.SafeDumper):
    """Plain YAML: a dict shared by two documents is written out twice, never as an anchor/alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(docs: list[Doc]) -> str:
    return HEADER + yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, explicit_start=True, width=110)


def render(settings: Settings) -> dict[str, str]:
    """Every rendered file's text, by path relative to ``deploy/``."""
    return {path: to_yaml(docs) for path, docs in manifests(settings).items()}


def write(settings: Settings, out: Path) -> list[Path]:
    """Render into ``out`` (created as needed); returns the files written."""
    written = []
    for rel, text in render(settings).items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale(settings: Settings, root: Path) -> list[str]:
    """Rendered files that are missing under ``root`` or differ from a fresh render."""
    return [
        rel
        for rel, text in render(settings).items()
        if not (root / rel).is_file() or (root / rel).read_text() != text
    ]
