"""Bring your own table: profile a CSV, infer its contract, clean it, and train on it in one call.

:func:`train_and_register` (``churnops train-table``, :func:`train_from_frame` for library users)
runs the Dagster training graph's steps — ``candidate_stage.run_candidates`` →
``challenger_stage.evaluate_challenger`` → ``challenger_stage.decide_promotion`` — in one call on any
:class:`~churn_assets.modeling.splits.Splits`: same candidates, same seven gates, same registration.
Model selection is on VALIDATION AUC; the test split is only reported, never used to choose.

A table's model is a registered model of its own (:func:`table_model_name`: the file's name, or
``--model-name``), never the production model that serving deploys: its promotion compares it only
with earlier versions of the same table's model. Registering under the production name is refused
unless every feature is one of the feature store's (``registry.check_registrable``), before anything
is tuned.

Cleaning rules for real, dirty data (each recorded in :attr:`CleanTable.actions`):

* strings are stripped; blank strings become missing (e.g. Telco ``TotalCharges == " "``);
* a text column whose non-missing values all parse as numbers becomes numeric;
* a yes/no (true/false, y/n) text column becomes 0/1; 0/1 integer columns stay as they are;
* identifier columns are dropped: the ``--id`` column, plus any column whose name looks like an id
  (``id``, ``*_id``, ``*ID``) or a text column that is unique per row;
* the ``--time`` column is not a feature: it drives a time-based split (oldest 70 % train, next 15 %
  val, newest 15 % test); without it the split is stratified on the label;
* remaining text columns become pandas ``category`` (used natively by LightGBM / HistGB, one-hot
  encoded for the other baselines).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pandera.pandas as pa

from churn_assets.modeling.candidate_stage import CandidateStage, run_candidates
from churn_assets.modeling.candidates import BASELINES
from churn_assets.modeling.challenger_stage import ChallengerStage, decide_promotion, evaluate_challenger
from churn_assets.modeling.gates import gate_results
from churn_assets.modeling.registry import PromotionDecision, check_registrable
from churn_assets.modeling.splits import (
    Splits,
    TrainingDataError,
    assign_by_time_share,
    assign_stratified,
    build_splits,
)
from churn_assets.modeling.tracking import configure
from churn_assets.settings import Settings

Progress = Callable[[str, int, int], None]


def no_progress(_task: str, _done: int, _total: int) -> None:
    """The default progress callback: report nothing."""
    return None


@dataclass
class TrainingReport:
    """Everything a training run decided and measured (JSON-friendly via :meth:`summary`)."""

    model_name: str
    best_model: str
    test_auc: float
    val_auc: dict[str, float]
    candidate_test_auc: dict[str, float]
    imbalance: dict[str, str]
    threshold: float
    calibration: str
    calibration_brier: dict[str, float]
    test_metrics: dict[str, float]
    train_auc: float
    shap_top5_share: float | None
    shap_top5: list[str]
    fairness_max_disparity: float | None
    fairness_column: str | None
    stress: dict[str, dict[str, Any]]
    gates: dict[str, bool]
    model_version: str
    semver: str
    promotion: str
    promotion_reason: str
    run_ids: dict[str, str] = field(default_factory=dict)
    tuning: dict[str, Any] = field(default_factory=dict)
    calibration_val_auc: dict[str, float] = field(default_factory=dict)
    ensemble_members: dict[str, float] = field(default_factory=dict)
    experiment_run_id: str = ""
    selectable: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        baselines = {k: v for k, v in self.candidate_test_auc.items() if k in BASELINES}
        return {
            "model_name": self.model_name,
            "test_auc": self.test_auc,
            "best_model": self.best_model,
            "baselines": baselines,
            "candidates_test_auc": self.candidate_test_auc,
            "candidates_val_auc": self.val_auc,
            "model_version": self.model_version,
            "semver": self.semver,
            "promotion": self.promotion,
            "promotion_reason": self.promotion_reason,
            "threshold": self.threshold,
            "calibration": self.calibration,
            "calibration_brier_val_oof": self.calibration_brier,
            "calibration_val_auc": self.calibration_val_auc,
            "ensemble_members": self.ensemble_members,
            "selectable": self.selectable,
            "experiment_run_id": self.experiment_run_id,
            "test_metrics": self.test_metrics,
            "train_auc": self.train_auc,
            "imbalance": self.imbalance,
            "shap_top5_share": self.shap_top5_share,
            "shap_top5": self.shap_top5,
            "fairness_max_disparity": self.fairness_max_disparity,
            "fairness_column": self.fairness_column,
            "stress": self.stress,
            "gates": self.gates,
            "tuning": self.tuning,
            "run_ids": self.run_ids,
        }


def train_and_register(
    splits: Splits,
    settings: Settings,
    data_hash: str,
    n_trials: int | None = None,
    timeout_seconds: float | None = None,
    baselines: Sequence[str] = BASELINES,
    study_name: str | None = None,
    progress: Progress = no_progress,
    actor: str = "system",
    model_name: str | None = None,
) -> TrainingReport:
    """Run the whole training pipeline on ``splits`` and register the chosen model (see module doc).

    The Dagster training graph's steps in one call: :func:`~.candidate_stage.run_candidates` →
    :func:`~.challenger_stage.evaluate_challenger` (seven gate measurements, final run, registration)
    → :func:`~.challenger_stage.decide_promotion`, with the step files in a temporary folder.
    ``n_trials`` / ``timeout_seconds`` override the settings' study budget. ``model_name``: the
    registered model (None = the production model, which accepts feature-store features only: checked
    here, before anything is tuned).
    """
    cfg = settings.modeling
    check_registrable(settings, model_name or cfg.registered_model_name, splits.features)
    budget = {
        "n_trials": n_trials or cfg.n_trials,
        "timeout_seconds": cfg.timeout_seconds if timeout_seconds is None else timeout_seconds,
    }
    run_settings = settings.model_copy(update={"modeling": cfg.model_copy(update=budget)})
    steps = ("tuning + candidates (Optuna, MLflow)", "challenger: calibrate, evaluate, register", "promotion")
    tracking = configure(run_settings)
    parent = f"train:{model_name or cfg.registered_model_name}"
    nested = mlflow.active_run() is not None
    with (
        tempfile.TemporaryDirectory(prefix="churnops-train-") as tmp,
        mlflow.start_run(experiment_id=tracking.experiment_id, run_name=parent, nested=nested),
    ):
        progress(steps[0], 0, 1)
        stage = run_candidates(
            splits,
            run_settings,
            Path(tmp) / "candidates",
            study_name=study_name or cfg.study_name,
            baselines=baselines,
        )
        progress(steps[0], 1, 1)
        progress(steps[1], 0, 1)
        challenger = evaluate_challenger(
            stage, splits, run_settings, data_hash, Path(tmp) / "challenger", actor, model_name=model_name
        )
        progress(steps[1], 1, 1)
        progress(steps[2], 0, 1)
        decision = decide_promotion(run_settings, challenger, splits.X_test, splits.y_test, actor)
        progress(steps[2], 1, 1)
    return report(stage, challenger, decision, run_settings)


def report(
    stage: CandidateStage, challenger: ChallengerStage, decision: PromotionDecision, settings: Settings
) -> TrainingReport:
    """The :class:`TrainingReport` of one pass through the stages."""
    m = challenger.measurements
    final_run = f"final:{challenger.best}+{challenger.calibration}"
    return TrainingReport(
        model_name=challenger.model_name,
        best_model=challenger.best,
        test_auc=float(challenger.test_metrics["auc"]),
        val_auc=dict(stage.val_aucs),
        candidate_test_auc={r["model"]: r["test_auc"] for r in stage.table},
        imbalance=dict(stage.imbalance),
        threshold=m.threshold.value,
        calibration=challenger.calibration,
        calibration_brier=dict(m.calibration.val_brier_oof),
        test_metrics=dict(challenger.test_metrics),
        train_auc=challenger.train_auc,
        shap_top5_share=m.shap.top5_share,
        shap_top5=list(m.shap.top5),
        fairness_max_disparity=m.fairness.max_disparity,
        fairness_column=m.fairness.worst_column,
        stress={name: asdict(s) for name, s in m.stress_slices.items()},
        gates={g.name: g.passed for g in gate_results(m, settings.modeling)},
        model_version=challenger.version,
        semver=challenger.semver,
        promotion=decision.outcome,
        promotion_reason=decision.reason,
        run_ids={**stage.run_ids, final_run: challenger.run_id},
        tuning=dict(stage.tuning),
        calibration_val_auc=dict(m.calibration.val_auc),
        ensemble_members=dict(stage.members),
        experiment_run_id=stage.experiment_run_id,
        selectable=list(stage.selectable),
    )


def train_from_frame(
    X: pd.DataFrame,
    y: pd.Series,
    assignment: pd.Series,
    settings: Settings,
    data_hash: str,
    features: Sequence[str] | None = None,
    context: pd.DataFrame | None = None,
    **kwargs: Any,
) -> TrainingReport:
    """Validate ``X``/``y``/``assignment`` (:func:`build_splits`) and run :func:`train_and_register`.

    Bad inputs raise ``TrainingDataError`` BEFORE anything is tuned, tracked or registered.
    """
    splits = build_splits(X, y, assignment, features=features, context=context)
    return train_and_register(splits, settings, data_hash, **kwargs)


YES = {"yes", "y", "true", "t"}
NO = {"no", "n", "false", "f"}
# "id", "ID", "customer_id", "id_customer", "customerID", "customerId" — but not "paid" or "valid".
_ID_NAME = re.compile(r"^(id|ID|Id)$|_(id|ID)$|^(id|ID)_|[a-z](ID|Id)$")


@dataclass(frozen=True)
class ColumnProfile:
    """One column: pandas dtype as read, missing values (incl. blank strings), distinct values, examples."""

    name: str
    dtype: str
    missing: int
    blank_strings: int
    distinct: int
    examples: list[str]


@dataclass(frozen=True)
class TableProfile:
    """Rows, columns and the target's positive rate of a CSV as read."""

    path: str
    rows: int
    columns: list[ColumnProfile]
    target: str
    positive: str
    target_rate: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows": self.rows,
            "n_columns": len(self.columns),
            "target": self.target,
            "positive": self.positive,
            "target_rate": self.target_rate,
            "columns": [c.__dict__ for c in self.columns],
        }


@dataclass
class CleanTable:
    """Features (cleaned), 0/1 labels, optional time column, and what cleaning did."""

    X: pd.DataFrame
    y: pd.Series
    time: pd.Series | None
    dropped: list[str]
    actions: list[str] = field(default_factory=list)


def read_table(path: str | Path) -> pd.DataFrame:
    """The CSV with every column as text (cleaning decides the types)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def check_target(df: pd.DataFrame, target: str, positive: str) -> None:
    """Fail with the list of choices when the target column or positive value is wrong."""
    if target not in df.columns:
        raise TrainingDataError(f"target column {target!r} not found; columns are: {', '.join(df.columns)}")
    values = sorted(df[target].astype(str).str.strip().unique())
    if str(positive) not in values:
        shown = ", ".join(repr(v) for v in values[:20])
        raise TrainingDataError(f"positive value {positive!r} not in column {target!r}; values are: {shown}")
    if len(values) < 2:
        raise TrainingDataError(f"target column {target!r} has a single value {values[0]!r}")


def profile_table(df: pd.DataFrame, target: str, positive: str, path: str = "") -> TableProfile:
    check_target(df, target, positive)
    cols = []
    for name in df.columns:
        s = df[name]
        text = s.astype(str)
        blank = int((text.str.strip() == "").sum()) if s.dtype == object else 0
        cols.append(
            ColumnProfile(
                name=name,
                dtype=_kind(s),
                missing=int(s.isna().sum()) + blank,
                blank_strings=blank,
                distinct=int(s.nunique(dropna=True)),
                examples=[str(v) for v in s.dropna().unique()[:3]],
            )
        )
    rate = float((df[target].astype(str).str.strip() == str(positive)).mean())
    return TableProfile(path, len(df), cols, target, str(positive), rate)


def _kind(s: pd.Series) -> str:
    text = s.astype(str).str.strip()
    nonblank = text[text != ""]
    if pd.to_numeric(nonblank, errors="coerce").notna().all() and len(nonblank):
        values = pd.to_numeric(nonblank)
        return "integer" if (values == values.round()).all() else "float"
    if set(nonblank.str.lower().unique()) <= YES | NO:
        return "yes/no"
    return "text"


def clean_table(
    df: pd.DataFrame, target: str, positive: str, id_col: str | None = None, time_col: str | None = None
) -> CleanTable:
    """Apply the cleaning rules of the module docstring."""
    check_target(df, target, positive)
    for opt, col in (("--id", id_col), ("--time", time_col)):
        if col is not None and col not in df.columns:
            raise TrainingDataError(f"{opt} column {col!r} not found; columns are: {', '.join(df.columns)}")
    y = (df[target].astype(str).str.strip() == str(positive)).astype(int).rename(target)
    time = df[time_col] if time_col else None
    X = df.drop(columns=[c for c in (target, time_col) if c]).copy()
    actions: list[str] = []
    dropped: list[str] = []
    for name in list(X.columns):
        s = X[name].astype(str).str.strip()
        blank = s == ""
        if blank.any():
            actions.append(f"{name}: {int(blank.sum())} blank string(s) -> missing")
        s = s.mask(blank)
        unique_per_row = s.nunique(dropna=True) == len(s)
        numeric = pd.to_numeric(s, errors="coerce")
        is_numeric = bool(numeric.notna().sum() == s.notna().sum())
        if (
            name == id_col
            or (_ID_NAME.search(name) and s.nunique() > 0.9 * len(s))
            or (unique_per_row and not is_numeric)
        ):
            dropped.append(name)
            actions.append(f"{name}: identifier, dropped")
            X = X.drop(columns=name)
            continue
        if is_numeric:
            X[name] = numeric
            continue
        lower = s.str.lower()
        if set(lower.dropna().unique()) <= YES | NO:
            flags = lower.map(lambda v: None if pd.isna(v) else int(v in YES)).astype("float")
            X[name] = flags if flags.isna().any() else flags.astype("int64")
            actions.append(f"{name}: yes/no -> 0/1")
            continue
        X[name] = s.astype("category")
    return CleanTable(X, y, time, dropped, actions)


def infer_contract(table: CleanTable) -> pa.DataFrameSchema:
    """A pandera contract inferred from the cleaned table (features + label)."""
    frame = pd.concat([table.X, table.y], axis=1)
    return pa.infer_schema(frame)


def contract_yaml(schema: pa.DataFrameSchema) -> str:
    """The contract as YAML (``DataFrameSchema.to_yaml``; the Python form needs ``black``)."""
    return str(schema.to_yaml())


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def table_model_name(path: str | Path) -> str:
    """The registered model of a table: its file name without extension, lower case, every run of other
    characters than letters and digits turned into one ``-`` (``My Shop churn.csv`` → ``my-shop-churn``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", Path(path).stem.lower()).strip("-")
    if not slug:
        raise TrainingDataError(
            f"cannot name a model after {Path(path).name!r} (no letters or digits): pass --model-name NAME"
        )
    return slug


def train_table(
    path: str | Path,
    target: str,
    positive: str,
    settings: Settings,
    id_col: str | None = None,
    time_col: str | None = None,
    budget_seconds: float | None = None,
    trials: int | None = None,
    progress: Progress = no_progress,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Profile, clean, split, tune + compare candidates, calibrate, evaluate and register a CSV as a
    version of its own registered model (``model_name``, default :func:`table_model_name`).

    Returns the :meth:`TrainingReport.summary` dict (``test_auc``, ``best_model``, ``baselines``,
    ``model_version``, …) plus ``profile``, ``contract`` (YAML), ``cleaning``, ``split``.
    """
    name = model_name if model_name is not None else table_model_name(path)
    if not name.strip():
        raise TrainingDataError("--model-name must not be blank")
    df = read_table(path)
    profile = profile_table(df, target, positive, str(path))
    table = clean_table(df, target, positive, id_col, time_col)
    schema = infer_contract(table)
    cfg = settings.modeling
    if table.time is not None:
        assignment = assign_by_time_share(table.time, cfg.val_share, cfg.test_share)
        splits = build_splits(table.X, table.y, assignment, kind="time")
    else:
        assignment = assign_stratified(table.y, cfg.val_share, cfg.test_share, cfg.seed)
        splits = build_splits(table.X, table.y, assignment, kind="stratified")
    report = train_and_register(
        splits,
        settings,
        data_hash=file_sha256(path),
        n_trials=trials,
        timeout_seconds=budget_seconds,
        study_name=f"{cfg.study_name}-{Path(path).stem}-{file_sha256(path)[:8]}",
        progress=progress,
        model_name=name,
    )
    return {
        **report.summary(),
        "profile": profile.as_dict(),
        "contract": contract_yaml(schema),
        "cleaning": {"dropped": table.dropped, "actions": table.actions},
        "split": {"kind": splits.kind, "sizes": splits.sizes(), "positive_rates": splits.positive_rates()},
    }
