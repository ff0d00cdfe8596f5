"""MLflow experiment tracking.

Every candidate is one MLflow run of the ``settings.modeling.experiment_name`` experiment holding:
params, metrics (``auc``, ``recall``, ``precision``, ``f1``, ``brier``, ``train_seconds``, plus extras),
PNG artifacts, and the logged model (``mlflow.<flavor>.log_model(model, name="model")``) with its
signature and input example when the caller passes example rows. When a run is already active (the
parent run the orchestrator opened for the whole training run), each candidate run is nested under it.

The tracking URI defaults to a SQLite file ``home/mlflow/mlflow.db`` and the experiment is created
with the explicit artifact root ``home/mlflow/artifacts``; a PostgreSQL URI works the same way.
Models are logged with explicit ``pip_requirements`` (MLflow's requirement inference costs ~15 s per
model) and sklearn models with skops serialization and their trusted types listed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mlflow
import mlflow.lightgbm
import mlflow.sklearn
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import RunInfo
from mlflow.models import infer_signature

from churn_assets.modeling.paths import artifact_location, tracking_uri
from churn_assets.settings import Settings

PIP_REQUIREMENTS = {
    "sklearn": ["scikit-learn", "lightgbm", "xgboost-cpu", "pandas", "numpy"],
    "lightgbm": ["lightgbm", "scikit-learn", "pandas", "numpy"],
}
SIGNATURE_ROWS = 5  # feature rows logged as each model's input example (its signature is inferred from them)


@dataclass(frozen=True)
class Tracking:
    """A configured tracking target: URI, experiment id, and a client bound to the URI."""

    uri: str
    experiment_id: str
    client: MlflowClient


def configure(settings: Settings) -> Tracking:
    """Point MLflow at the settings' tracking URI and get-or-create the experiment."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    quiet_artifact_downloads()
    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = settings.modeling.experiment_name
    experiment = client.get_experiment_by_name(name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(name, artifact_location=artifact_location(settings))
    )
    return Tracking(uri, experiment_id, client)


@dataclass(frozen=True)
class LoggedRun:
    """What a logged run produced: run id, model URI and sha256 of the serialized model file."""

    run_id: str
    model_uri: str
    artifact_hash: str
    flavor: str


def model_file_hash(model_uri: str) -> str:
    """sha256 of the serialized model file (``model.*``) of a logged model."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    files = sorted(p for p in local.iterdir() if p.is_file() and p.name.startswith("model."))
    if not files:
        raise FileNotFoundError(f"no model.* file in {model_uri}")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


class _CategoryServingCheck(logging.Filter):
    """Drops MLflow's "Failed to validate serving input example" warning when its cause is LightGBM's
    "categorical_feature do not match" or XGBoost's "When categorical type is supplied, ...
    enable_categorical": MLflow checks each input example by sending it through the
    pyfunc JSON serving path, which turns category columns into strings that LightGBM rejects. That
    path is not how churnops serves (BentoML loads the native flavor or the scikit-learn object); any other
    failure still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Failed to validate serving input example")
            and any(cause in message for cause in CATEGORY_CAUSES)
        )


# LightGBM's and XGBoost's words for "a category column arrived as strings"
CATEGORY_CAUSES = ("categorical_feature do not match", "When categorical type is supplied")
_CATEGORY_SERVING_CHECK = _CategoryServingCheck()


def log_model(model: Any, flavor: str, input_example: pd.DataFrame | None = None) -> Any:
    """Log ``model`` into the active run with the right flavor; returns MLflow's ``ModelInfo``.

    With ``input_example`` (feature rows; its first ``SIGNATURE_ROWS`` are used) the model carries a
    signature (inputs: the columns and their types; outputs: what the pyfunc ``predict`` returns, the
    class label) and those rows as its input example."""
    example: dict[str, Any] = {}
    if input_example is not None:
        rows = input_example.head(SIGNATURE_ROWS)
        example = {"signature": infer_signature(rows, model.predict(rows)), "input_example": rows}
        logger = logging.getLogger("mlflow.models.model")
        if _CATEGORY_SERVING_CHECK not in logger.filters:
            logger.addFilter(_CATEGORY_SERVING_CHECK)
    if flavor == "lightgbm":
        return mlflow.lightgbm.log_model(
            model, name="model", pip_requirements=PIP_REQUIREMENTS["lightgbm"], **example
        )
    # skops is imported here, not at module level: its import enumerates every scikit-learn estimator
    # (sklearn.utils.all_estimators), seconds that each `churnops status` / `experiments` / `audit`
    # process would pay without logging any model.
    import skops.io as sio

    trusted = sio.get_untrusted_types(data=sio.dumps(model))
    return mlflow.sklearn.log_model(
        model,
        name="model",
        pip_requirements=PIP_REQUIREMENTS["sklearn"],
        skops_trusted_types=trusted,
        **example,
    )


def quiet_artifact_downloads() -> None:
    """No tqdm progress bar per model load (it cluttered `churnops demo` and run logs), unless the user
    set MLflow's own variable."""
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    if not MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.is_set():
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.set(False)


def load_model(model_uri: str, flavor: str) -> Any:
    """Load a logged model back as an object with ``predict_proba``."""
    quiet_artifact_downloads()
    if flavor == "lightgbm":
        return mlflow.lightgbm.load_model(model_uri)
    return mlflow.sklearn.load_model(model_uri)


def log_candidate_run(
    tracking: Tracking,
    run_name: str,
    model: Any,
    flavor: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    artifacts: list[Path] | None = None,
    tags: Mapping[str, str] | None = None,
    input_example: pd.DataFrame | None = None,
) -> LoggedRun:
    """One MLflow run: params, metrics, artifacts (PNGs under ``plots/``, other files under
    ``evaluation/``), the model (with a signature from ``input_example``); returns ids and the model
    hash. Nested under the active run when there is one (tag ``mlflow.parentRunId``)."""
    nested = mlflow.active_run() is not None
    with mlflow.start_run(experiment_id=tracking.experiment_id, run_name=run_name, nested=nested) as run:
        mlflow.set_tags({"model": run_name, **(tags or {})})
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if not math.isnan(float(v))})
        for path in artifacts or []:
            mlflow.log_artifact(str(path), artifact_path="plots" if path.suffix == ".png" else "evaluation")
        info = log_model(model, flavor, input_example)
    return LoggedRun(run.info.run_id, info.model_uri, model_file_hash(info.model_uri), flavor)


EXPERIMENT_TABLE = "experiments/candidates.json"  # the experiment table artifact (mlflow.log_table)
EXPERIMENT_TABLE_TAG = "churnops.experiment_table"  # tag of the runs holding one
TABLE_COLUMNS = (
    "model",
    "chosen",
    "val_auc",
    "val_auc_oof",
    "selectable",
    "test_auc",
    "recall",
    "precision",
    "f1",
    "train_seconds",
    "imbalance",
    "run_id",
    "params",
)


def log_experiment_table(tracking: Tracking, rows: list[dict[str, Any]]) -> str:
    """Log the experiment table of a training run — one row per candidate: model, params, val / test
    AUC, recall, precision, F1 (test, at the candidate's val-F1 threshold), fit seconds, run id — as the
    MLflow table artifact ``EXPERIMENT_TABLE`` (``mlflow.log_table``) of the active run (the parent run
    of the training run), or of a run of its own named ``experiments`` when none is active. The run is
    tagged ``EXPERIMENT_TABLE_TAG``; returns its id."""
    frame = pd.DataFrame(
        [
            {
                **{k: r.get(k) for k in TABLE_COLUMNS if k != "params"},
                "params": json.dumps(r.get("params", {}), default=str, sort_keys=True),
            }
            for r in rows
        ],
        columns=list(TABLE_COLUMNS),
    )
    active = mlflow.active_run()
    if active is not None:
        run_id = active.info.run_id
    else:
        with mlflow.start_run(experiment_id=tracking.experiment_id, run_name="experiments") as run:
            run_id = run.info.run_id
    mlflow.log_table(frame, EXPERIMENT_TABLE, run_id=run_id)
    tracking.client.set_tag(run_id, EXPERIMENT_TABLE_TAG, "true")
    return run_id


@dataclass(frozen=True)
class ExperimentTable:
    """The experiment table of one training run: the run holding it and its rows."""

    run_id: str
    run_name: str | None
    started: str
    rows: list[dict[str, Any]]


def experiment_table(settings: Settings, run_id: str | None = None) -> ExperimentTable | None:
    """The experiment table logged by :func:`log_experiment_table` in run ``run_id``, or the latest one
    (None when no training run logged one)."""
    import datetime as dt

    tracking = configure(settings)
    if run_id is None:
        runs = tracking.client.search_runs(
            [tracking.experiment_id],
            filter_string=f"tags.`{EXPERIMENT_TABLE_TAG}` = 'true'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if not runs:
            return None
        run = runs[0]
    else:
        run = tracking.client.get_run(run_id)
    frame = tracking.client.load_table(run.info.experiment_id, EXPERIMENT_TABLE, run_ids=[run.info.run_id])
    rows = []
    for record in frame.to_dict("records"):
        row = {str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
        params = row.get("params")
        row["params"] = json.loads(params) if isinstance(params, str) else {}
        rows.append(row)
    started = dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.UTC).isoformat(timespec="seconds")
    return ExperimentTable(run.info.run_id, run.info.run_name, started, rows)


def active_run_info() -> RunInfo | None:
    """The active run of this thread (the parent of the runs logged now), if any."""
    run = mlflow.active_run()
    return run.info if run is not None else None


def ui_run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """Address of a run's page in the MLflow UI at ``ui_url``."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_model_version_url(ui_url: str, name: str, version: str | int) -> str:
    """Address of a registered model version's page in the MLflow UI at ``ui_url``."""
    return f"{ui_url.rstrip('/')}/#/models/{quote(name, safe='')}/versions/{version}"


def list_runs(settings: Settings, max_results: int = 200) -> list[dict[str, Any]]:
    """The experiment's runs, newest first: run id/name, model, params, AUC, recall, F1, duration, and the
    parent run (``mlflow.parentRunId``; ``None`` for the parent runs of Dagster runs, named after their
    job, and for runs logged outside one)."""
    tracking = configure(settings)
    runs = tracking.client.search_runs(
        [tracking.experiment_id], max_results=max_results, order_by=["attributes.start_time DESC"]
    )
    rows = []
    for r in runs:
        m, p = r.data.metrics, r.data.params
        end = r.info.end_time or r.info.start_time
        rows.append(
            {
                "run_id": r.info.run_id,
                "run_name": r.info.run_name,
                "model": r.data.tags.get("model", r.info.run_name),
                "params": {k: v for k, v in sorted(p.items())},
                "auc": m.get("auc"),
                "recall": m.get("recall"),
                "f1": m.get("f1"),
                "train_seconds": m.get("train_seconds"),
                "duration_seconds": (end - r.info.start_time) / 1000 if r.info.start_time else None,
                "status": r.info.status,
                "parent_run_id": r.data.tags.get("mlflow.parentRunId"),
            }
        )
    return rows


def pipeline_runs(settings: Settings, jobs: Sequence[str], max_results: int = 100) -> list[dict[str, Any]]:
    """The MLflow parent runs of the Dagster runs of ``jobs`` (named after their job, tag ``dagster_run_id``),
    newest first: ``run_id, job, status, started_at, ended_at`` (aware UTC datetimes; ``ended_at`` None
    while running) and ``duration_seconds`` (None while running)."""
    tracking = configure(settings)
    runs = tracking.client.search_runs(
        [tracking.experiment_id],
        filter_string="tags.dagster_run_id LIKE '%'",
        max_results=max_results,
        order_by=["attributes.start_time DESC"],
    )
    out = []
    for r in runs:
        if r.info.run_name not in jobs or r.data.tags.get("mlflow.parentRunId"):
            continue
        start = dt.datetime.fromtimestamp(r.info.start_time / 1000, dt.UTC)
        end = dt.datetime.fromtimestamp(r.info.end_time / 1000, dt.UTC) if r.info.end_time else None
        out.append(
            {
                "run_id": r.info.run_id,
                "job": r.info.run_name,
                "status": r.info.status,
                "started_at": start,
                "ended_at": end,
                "duration_seconds": (end - start).total_seconds() if end else None,
            }
        )
    return out
