"""Optuna tuning of LightGBM and XGBoost on the validation split (one study per family).

* Objective: validation ROC AUC of an ``LGBMClassifier`` trained on the train split with up to
  ``MAX_ROUNDS`` boosting rounds and LightGBM early stopping (``EARLY_STOPPING_ROUNDS`` on val AUC).
* Pruning: ``optuna-integration`` is not installed, so a small LightGBM callback reports the val AUC
  every ``REPORT_EVERY`` rounds to the trial and raises ``optuna.TrialPruned`` when the
  ``MedianPruner`` says so (what ``LightGBMPruningCallback`` does).
* Imbalance: ``imbalance`` is a categorical search dimension — ``none`` (scale_pos_weight=1) or
  ``balanced`` (scale_pos_weight = negatives/positives); :attr:`TuningResult.imbalance_auc` records
  the best AUC of each so the choice is visible.
* Storage: an RDB storage (SQLite file by default, any SQLAlchemy URL e.g. PostgreSQL works);
  ``load_if_exists=True`` so a rerun with the same study name resumes it.
* Budget: ``n_trials`` is the TOTAL number of finished (complete + pruned) trials of the study —
  a rerun only runs the missing ones; ``timeout_seconds`` caps the wall clock of each call.
* XGBoost (:func:`tune_xgboost`): the same objective, pruning, imbalance dimension, storage and budget
  rules in a study of its own (``XGBClassifier`` with histogram trees and native categoricals; early
  stopping on val AUC through ``early_stopping_rounds``, pruning through an XGBoost training callback).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import optuna
import xgboost as xgb
from optuna.trial import TrialState

from churn_assets.modeling.candidates import with_options
from churn_assets.modeling.splits import Splits

MAX_ROUNDS = 1000
EARLY_STOPPING_ROUNDS = 50
REPORT_EVERY = 10
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class TuningResult:
    """Outcome of a (possibly resumed) study: best LightGBM params incl. ``n_estimators``, its val AUC,
    trial counts, and the best val AUC per imbalance choice."""

    study_name: str
    storage: str
    best_params: dict[str, Any]
    best_val_auc: float
    n_complete: int
    n_pruned: int
    n_run_now: int
    imbalance_auc: dict[str, float]

    @property
    def imbalance(self) -> str:
        return str(self.best_params.get("imbalance", "none"))


def _pruning_callback(trial: optuna.Trial, metric: str = "auc") -> Callable[[Any], None]:
    def _callback(env: Any) -> None:
        if env.iteration % REPORT_EVERY:
            return
        for _data, name, value, _higher in env.evaluation_result_list:
            if name == metric:
                trial.report(float(value), step=env.iteration)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at round {env.iteration} (val {metric}={value:.4f})")

    return _callback


def suggest_params(trial: optuna.Trial) -> dict[str, Any]:
    """The search space (LightGBM sklearn-API names)."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 128, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 200, log=True),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "subsample_freq": 1,
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-8, 10.0, log=True),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-8, 10.0, log=True),
        "imbalance": trial.suggest_categorical("imbalance", ["none", "balanced"]),
    }


def lgbm_params(params: dict[str, Any], splits: Splits) -> dict[str, Any]:
    """Translate search params (``imbalance``) into ``LGBMClassifier`` kwargs."""
    out = {k: v for k, v in params.items() if k != "imbalance"}
    if params.get("imbalance") == "balanced":
        pos = float(splits.y_train.sum())
        out["scale_pos_weight"] = (len(splits.y_train) - pos) / max(pos, 1.0)
    return out


def _objective(
    splits: Splits, seed: int, n_jobs: int, options: dict[str, Any]
) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        params = lgbm_params(suggest_params(trial), splits)
        model = lgb.LGBMClassifier(
            objective="binary",
            n_estimators=MAX_ROUNDS,
            random_state=seed,
            n_jobs=n_jobs,
            verbose=-1,
            **with_options(params, options),
            **params,
        )
        model.fit(
            splits.X_train,
            splits.y_train,
            eval_X=(splits.X_val,),
            eval_y=(splits.y_val,),
            eval_metric="auc",
            callbacks=[
                lgb.early_stopping(EARLY_STOPPING_ROUNDS, first_metric_only=True, verbose=False),
                _pruning_callback(trial),
            ],
        )
        trial.set_user_attr("best_iteration", int(model.best_iteration_ or MAX_ROUNDS))
        return float(model.best_score_["valid_0"]["auc"])

    return objective


def suggest_xgboost_params(trial: optuna.Trial) -> dict[str, Any]:
    """The XGBoost search space (``XGBClassifier`` names)."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 8),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 50.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-8, 10.0, log=True),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-8, 10.0, log=True),
        "imbalance": trial.suggest_categorical("imbalance", ["none", "balanced"]),
    }


def xgboost_params(params: dict[str, Any], splits: Splits) -> dict[str, Any]:
    """Translate search params (``imbalance``) into ``XGBClassifier`` kwargs (same rule as LightGBM)."""
    return lgbm_params(params, splits)


class _XGBoostPruning(xgb.callback.TrainingCallback):
    """Reports the val AUC every ``REPORT_EVERY`` rounds; raises ``TrialPruned`` when the pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        super().__init__()
        self.trial = trial

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, dict[str, Any]]) -> bool:
        if epoch % REPORT_EVERY:
            return False
        value = float(next(iter(evals_log.values()))["auc"][-1])
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at round {epoch} (val auc={value:.4f})")
        return False


def _xgboost_objective(splits: Splits, seed: int, n_jobs: int) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        params = xgboost_params(suggest_xgboost_params(trial), splits)
        model = xgb.XGBClassifier(
            objective="binary:logistic",
            tree_method="hist",
            enable_categorical=True,
            n_estimators=MAX_ROUNDS,
            early_stopping_rounds=EARLY_STOPPING_ROUNDS,
            eval_metric="auc",
            random_state=seed,
            n_jobs=n_jobs,
            callbacks=[_XGBoostPruning(trial)],
            **params,
        )
        model.fit(splits.X_train, splits.y_train, eval_set=[(splits.X_val, splits.y_val)], verbose=False)
        trial.set_user_attr("best_iteration", int(model.best_iteration) + 1)
        return float(model.best_score)

    return objective


SQLITE_BUSY_SECONDS = 60  # concurrent trial runners (the Dask engine) wait for each other's SQLite writes


def study_storage(url: str) -> optuna.storages.RDBStorage:
    """The RDB storage of ``url``; a SQLite file waits up to ``SQLITE_BUSY_SECONDS`` for a lock."""
    if url.startswith("sqlite"):
        return optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": SQLITE_BUSY_SECONDS}}
        )
    return optuna.storages.RDBStorage(url)


def _sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def _pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=50)


@dataclass(frozen=True)
class TrialJob:
    """Everything a process needs to run trials of a study: the model family, the data, the storage and
    the study's name, the budget and fit options. Picklable, so the Dask engine runs it as cluster tasks
    (``churn_assets.compute.training.run_trials_on_cluster``); the local engine calls :meth:`run` here."""

    splits: Splits
    storage: str
    study_name: str
    timeout_seconds: float | None
    seed: int = 42
    n_jobs: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    family: Literal["lightgbm", "xgboost"] = "lightgbm"

    def objective(self) -> Callable[[optuna.Trial], float]:
        if self.family == "xgboost":
            return _xgboost_objective(self.splits, self.seed, self.n_jobs)
        return _objective(self.splits, self.seed, self.n_jobs, self.options)

    def run(
        self,
        n_trials: int,
        seed_offset: int = 0,
        callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
    ) -> None:
        """Load the study from the storage and run ``n_trials`` trials (sampler seed ``seed + seed_offset``:
        concurrent runners of one study draw different parameters)."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(
            study_name=self.study_name,
            storage=study_storage(self.storage),
            sampler=_sampler(self.seed + seed_offset),
            pruner=_pruner(),
        )
        study.optimize(
            self.objective(),
            n_trials=n_trials,
            timeout=self.timeout_seconds,
            callbacks=callbacks,
            gc_after_trial=False,
        )


# How a study's remaining trials are executed: ``(job, n_trials) -> None``; None = here, in this process.
TrialRunner = Callable[[TrialJob, int], Any]


def _run_study(
    job: TrialJob,
    n_trials: int,
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None,
    runner: TrialRunner | None,
    fixed: dict[str, Any],
) -> TuningResult:
    """Create or resume ``job``'s study, run it up to ``n_trials`` finished trials (here, or through
    ``runner``), summarise it (``fixed``: parameters of every trial that are not search dimensions)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=study_storage(job.storage),
        study_name=job.study_name,
        direction="maximize",
        load_if_exists=True,
        sampler=_sampler(job.seed),
        pruner=_pruner(),
    )
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = max(n_trials - done, 0)
    if remaining:
        if runner is None:
            job.run(remaining, callbacks=callbacks)
        else:
            runner(job, remaining)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise RuntimeError(f"study {job.study_name!r} has no completed trial (budget too small?)")
    best = study.best_trial
    imbalance_auc: dict[str, float] = {}
    for t in complete:
        key = str(t.params.get("imbalance", "none"))
        imbalance_auc[key] = max(imbalance_auc.get(key, 0.0), float(t.value or 0.0))
    return TuningResult(
        study_name=job.study_name,
        storage=job.storage,
        best_params={**best.params, **fixed, "n_estimators": int(best.user_attrs["best_iteration"])},
        best_val_auc=float(best.value or 0.0),
        n_complete=len(complete),
        n_pruned=len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
        n_run_now=len(study.get_trials(deepcopy=False, states=FINISHED)) - done,
        imbalance_auc=imbalance_auc,
    )


def tune_lightgbm(
    splits: Splits,
    storage: str,
    study_name: str,
    n_trials: int,
    timeout_seconds: float | None,
    seed: int = 42,
    n_jobs: int = 1,
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
    options: dict[str, Any] | None = None,
    runner: TrialRunner | None = None,
) -> TuningResult:
    """Create or resume ``study_name`` in ``storage`` and run it up to ``n_trials`` finished trials.
    ``options``: LightGBM training options of every trial (``candidates.lightgbm_options``).
    ``runner``: executes the remaining trials elsewhere (the Dask engine's cluster tasks; ``callbacks``
    then do not apply); None runs them in this process."""
    job = TrialJob(splits, storage, study_name, timeout_seconds, seed, n_jobs, dict(options or {}))
    return _run_study(job, n_trials, callbacks, runner, {"subsample_freq": 1})


def tune_xgboost(
    splits: Splits,
    storage: str,
    study_name: str,
    n_trials: int,
    timeout_seconds: float | None,
    seed: int = 42,
    n_jobs: int = 1,
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
    runner: TrialRunner | None = None,
) -> TuningResult:
    """The XGBoost study ``study_name`` (same budget rules as :func:`tune_lightgbm`; ``runner`` as there)."""
    job = TrialJob(splits, storage, study_name, timeout_seconds, seed, n_jobs, family="xgboost")
    return _run_study(job, n_trials, callbacks, runner, {})
