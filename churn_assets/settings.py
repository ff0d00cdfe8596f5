"""The one typed settings object of churnops.

Every tunable (paths, scale, seed, service URLs, thresholds) lives here. Values come from
environment variables prefixed ``CHURNOPS_`` (nested fields use ``__``, e.g.
``CHURNOPS_SIMULATION__N_CUSTOMERS=20000``) or an optional ``.env`` file, and fall back to
embedded defaults that run everything on one machine: DuckDB, SQLite, local MLflow.

No other module reads ``os.environ``; call :func:`get_settings` instead.

Secrets: ``serving.api_key``, ``alerts.webhook_url`` (a Slack webhook's path is its secret) and
``alerts.slack_token`` are :class:`~pydantic.SecretStr`, and every URL that may carry a password
(``postgres_url``, both ``redis_url``, ``modeling.tracking_uri`` / ``optuna_storage`` / ``audit_url``) a
:class:`SecretUrl`. Their ``str()`` / ``repr()`` hide the secret (a URL shows with its password as
``***``, :func:`mask_url`), a JSON dump of the settings shows ``**********``; only the code that
connects or compares calls ``.get_secret_value()``. :func:`settings_env` (the environment of a child
process) is the one place that writes them out in clear.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, SettingsConfigDict

SCALES: dict[str, int] = {"tiny": 2_000, "small": 20_000, "full": 500_000}

_SECRET_QUERY = re.compile(r"(?i)\b((?:password|passwd|pwd|token|secret|api_?key)=)[^&;]*")


def mask_url(url: str) -> str:
    """``url`` with the password of its user info and any ``password=`` / ``token=`` / ``secret=`` /
    ``api_key=`` query value replaced by ``***`` (``redis://:s3cret@h:6379/0`` → ``redis://:***@h:6379/0``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    masked = url  # edited in place: urlunsplit would rewrite e.g. sqlite:////abs/path
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user, colon, _password = userinfo.partition(":")
        masked = masked.replace(parts.netloc, f"{user}{':***' if colon else ''}@{host}", 1)
    if parts.query:
        head, _, query = masked.partition("?")
        masked = head + "?" + _SECRET_QUERY.sub(r"\1***", query)
    return masked


class SecretUrl(SecretStr):
    """A URL that may carry a password: shown with the password masked (:func:`mask_url`) by ``str()``
    and ``repr()``; ``get_secret_value()`` is the URL itself, for the code that connects."""

    def _display(self) -> str:
        return mask_url(self.get_secret_value())


class SimulationSettings(BaseModel):
    """Knobs of the simulated telecom world (see docs/simulation.md)."""

    seed: int = 42
    n_customers: int = Field(20_000, gt=0, description="Active customer base at the start of history.")
    start_date: dt.date = Field(
        dt.date(2023, 10, 2), description="Monday on which raw history starts (13 weeks of lookback)."
    )
    lookback_weeks: int = Field(13, ge=0, description="Weeks of raw data before the first snapshot month.")
    history_months: int = Field(18, ge=1, description="Monthly labelled feature snapshots in history.")
    label_horizon_days: int = Field(90, gt=0, description="A label is churn within this many days.")
    label_delay_weeks: int = Field(1, ge=0, description="Churn events reach the warehouse this late.")
    # Scripted production scenario (week numbers count production weeks from 1).
    campaign_start_week: int | None = Field(4, description="Week an acquisition campaign starts; None=off.")
    campaign_share: float = Field(0.7, ge=0, le=1, description="Share of new signups from the campaign.")
    campaign_signup_multiplier: float = Field(4.0, ge=1, description="Signup volume during the campaign.")
    concept_shift_week: int | None = Field(6, description="Week the churn drivers shift; None = off.")
    concept_shift_ramp_weeks: int = Field(8, ge=1, description="Weeks over which the shift fades in.")
    campaign_weeks: int | None = Field(16, ge=1, description="Weeks the campaign runs; None = until the end.")
    initial_tenure_years: float = Field(
        12.0, gt=0, description="Signup dates of the initial base spread over this many years before start."
    )
    retention_offer_uplift: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Relative cut of a customer's weekly churn probability while a retention offer runs "
        "(offers go to the customers the serving model flags: `World.send_offers`); 0 = offers change nothing.",
    )
    retention_offer_weeks: int = Field(4, ge=1, description="Simulated weeks a retention offer lasts.")

    @model_validator(mode="after")
    def _monday(self) -> SimulationSettings:
        if self.start_date.weekday() != 0:
            raise ValueError(f"simulation.start_date must be a Monday, got {self.start_date} ")
        return self


class FeatureStoreSettings(BaseModel):
    online_backend: Literal["sqlite", "redis"] = "sqlite"
    redis_url: SecretUrl = Field(
        SecretUrl("redis://127.0.0.1:6379/0"),
        description="Redis of the online store (backend redis); may carry a password (shown masked).",
    )
    redis_key_prefix: str = "churnops:fs"
    redis_batch_size: Annotated[int, Field(gt=0, description="Customers per Redis write pipeline.")] = 5_000
    deprecate_after_days: int = Field(
        90,
        gt=0,
        description="A feature that no champion, challenger or previous version of any registered model "
        "has used for this many days (simulated clock: the newest offline snapshot) is deprecated.",
    )
    retire_deprecated: bool = Field(
        False,
        description="Online-store materialization writes deprecated features as null (retired) instead "
        "of their values; the offline store keeps them.",
    )


class ContractSettings(BaseModel):
    """How raw files are validated against the data contracts (see docs/data_contracts.md)."""

    max_quarantine_share: float = Field(
        0.01, ge=0, le=1, description="A raw partition with more rejected rows than this blocks features."
    )
    chunk_rows: int = Field(
        100_000,
        gt=0,
        description="Rows read and validated at a time: bounds the memory of a check or an ingestion "
        "whatever the file size.",
    )
    sample_rows_per_rule: int = Field(
        5, ge=0, description="Rejected rows reported per (column, rule) by `churnops contracts check`."
    )
    earliest_plausible_date: dt.date | None = Field(
        None,
        description="Every date column must be on or after this date (rule date_in_range). None = "
        "January 1 of the year of the simulated world's oldest possible signup "
        "(simulation.start_date - simulation.initial_tenure_years).",
    )
    latest_plausible_date: dt.date = Field(
        dt.date(2100, 1, 1),
        description="Every date column must be on or before this date (rule date_in_range).",
    )
    tables_never_empty: list[str] = Field(
        default=["usage", "engagement", "billing"],
        description="Raw tables whose weekly file must have rows (rule file_has_rows, an error); a "
        "header-only file of another table is a warning (a quiet week can be real).",
    )


class ModelingSettings(BaseModel):
    """Training, tuning, tracking and registry knobs (see docs/modeling.md)."""

    seed: int = 42
    n_jobs: int = Field(default=1, ge=1, description="Threads per model fit (1 = no oversubscription).")
    train_periods: tuple[int, int] = Field(
        default=(1, 12), description="Inclusive period range of the train split."
    )
    val_periods: tuple[int, int] = Field(
        default=(13, 15), description="Inclusive period range of the val split."
    )
    test_periods: tuple[int, int] = Field(
        default=(16, 18), description="Inclusive period range of the test split."
    )
    val_share: float = Field(default=0.15, gt=0, lt=1, description="Stratified split: validation share.")
    test_share: float = Field(default=0.15, gt=0, lt=1, description="Stratified split: test share.")
    n_trials: int = Field(
        default=40, gt=0, description="Optuna trial budget of a study (total, across resumes)."
    )
    timeout_seconds: float = Field(
        default=300.0, gt=0, description="Optuna wall-clock budget per tuning call."
    )
    study_name: str = "churn-lightgbm"
    optuna_storage: SecretUrl | None = Field(
        default=None, description="RDB URL (may carry a password); None = SQLite file under home/optuna."
    )
    tracking_uri: SecretUrl | None = Field(
        default=None, description="MLflow URI (may carry a password); None = SQLite under home/mlflow."
    )
    experiment_name: str = "churnops"
    registered_model_name: str = "churn-model"
    mlflow_ui_url: str = Field(
        default="http://127.0.0.1:5000",
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="Base URL of the MLflow UI (`make mlflow-ui`) the Dagster metadata links to.",
    )
    audit_url: SecretUrl | None = Field(
        default=None, description="Audit log SQLAlchemy URL (may carry a password); None = home/registry."
    )
    promotion_mode: Literal["auto", "manual"] = "auto"
    min_auc_gain: float = Field(
        default=0.02,
        ge=-1,
        description="Challenger must beat the champion AUC by MORE (a negative value accepts a challenger "
        "at most that much worse: only for tests of the promotion chain).",
    )
    gate_min_auc: float = Field(default=0.70, ge=0, le=1, description="Gate: test AUC at least this.")
    gate_max_auc_gap: float = Field(
        default=0.05, ge=0, description="Gate: train AUC - test AUC at most this."
    )
    gate_max_disparity: float = Field(
        default=0.15, ge=0, description="Gate: max recall gap between segments at most this."
    )
    segment_columns: list[str] = Field(
        default=[
            "gender",
            "SeniorCitizen",
            "segment",
            "region",
            "plan_type",
            "acquisition_channel",
            "age_band",
        ],
        description="Fairness segments, used when present in the feature table.",
    )
    tenure_columns: list[str] = Field(
        default=["tenure", "tenure_months", "tenure_days"],
        description="Stress slice 'new customers' (first found).",
    )
    revenue_columns: list[str] = Field(
        default=["MonthlyCharges", "monthly_charges", "invoice_amount", "arpu"],
        description="Stress slice 'top revenue decile' (first found).",
    )
    # Dagster training path (docs/modeling.md, "Dagster assets"): candidates, extra gates, stress slices.
    baselines: list[str] = Field(
        default=["logistic_regression", "random_forest", "hist_gradient_boosting", "mlp"],
        description="scikit-learn baselines fitted beside the tuned LightGBM (Dagster path).",
    )
    extra_candidates: list[str] = Field(
        default=["spline_logistic_regression"],
        description="scikit-learn candidate families fitted beside the baselines, the same way "
        "(spline_logistic_regression: logistic regression on cubic splines of the numeric columns).",
    )
    xgboost: bool = Field(
        default=True,
        description="Tune (an Optuna study of its own, same n_trials / timeout_seconds budget) and fit an "
        "XGBoost candidate beside LightGBM.",
    )
    ensemble_max_members: int = Field(
        default=3,
        ge=0,
        description="ENSEMBLE candidate: a blend of at most this many of the best candidates, weights "
        "chosen on validation (0 or 1 = no ensemble candidate).",
    )
    gate_max_calibration_error: float = Field(
        default=0.05,
        ge=0,
        description="Gate: mean |observed - predicted| over reliability bins at most this.",
    )
    gate_min_recall: float = Field(
        default=0.30, ge=0, le=1, description="Gate: test recall at the chosen threshold at least this."
    )
    gate_max_shap_top5_share: float = Field(
        default=0.90, gt=0, le=1, description="Gate: share of mean |SHAP| held by the top 5 features at most."
    )
    gate_min_slice_auc: float = Field(
        default=0.60, ge=0, le=1, description="Gate: AUC on every stress slice at least this."
    )
    sample_rows: int = Field(
        default=100_000,
        gt=0,
        description="Tuning and baselines use a stratified sample of at most this many train (and val) "
        "rows; the final LightGBM is refitted on the full train split.",
    )
    eval_rows: int = Field(
        default=500_000,
        gt=0,
        description="Candidates are compared on a stratified sample of at most this many val and test "
        "rows each (the same rows for every candidate); the winner is then scored on the full val and "
        "test splits, and on a sample of this many train rows for the train AUC (train/test gap gate).",
    )
    training_set_memory_limit: str = Field(
        default="1GB",
        description="DuckDB memory limit while the training-set step runs the PIT join (its Arrow result "
        "lives outside it, so a lower limit lowers the step's peak memory at some cost in time; "
        "measurements in docs/benchmarks.md).",
    )
    lightgbm_quantized_gradients: bool = Field(
        default=True,
        description="LightGBM fits on at least lightgbm_quantized_min_rows train rows (the full-scale refit "
        "and retraining) use quantized-gradient training (use_quantized_grad + quant_train_renew_leaf): "
        "faster at the same test AUC (docs/benchmarks.md). Only for params without row bagging or column "
        "sampling (LightGBM 4.x "
        "quantized training is unsound with them, lightgbm-org/LightGBM#5994): tuned params bag, so the "
        "stage's refit uses exact gradients. A fit that LightGBM rejects in this mode is redone exactly.",
    )
    lightgbm_quantized_min_rows: int = Field(
        default=1_000_000,
        ge=1,
        description="Smaller fits (Optuna trials on the sample, small tables) keep exact gradients: there "
        "the gain is nil and LightGBM 4.x can fail a quantized split check on a few thousand rows.",
    )
    retune_on_retrain: bool = Field(
        default=False,
        description="Retraining (candidate_stage.run_retraining_candidates, the training/candidates asset): "
        "False = refit LightGBM with the champion's "
        "hyperparameters; True = run the Optuna study again.",
    )
    fairness_min_positives: int = Field(
        default=20, ge=1, description="Fairness gate: groups with fewer positives are reported, not compared."
    )
    shap_max_rows: int = Field(default=2000, gt=0, description="Test rows sampled for SHAP (TreeSHAP cost).")
    new_customer_days: int = Field(default=90, gt=0, description="Stress slice: tenure_days below this.")
    slice_tenure_column: str = Field(default="tenure_days", description="Stress slice 'new customers'.")
    slice_revenue_column: str = Field(default="monthly_revenue", description="Stress slice 'high value'.")
    # Which snapshots the Dagster training set uses (docs/automation.md, "Retraining").
    split_mode: Literal["periods", "rolling"] = Field(
        default="periods",
        description="periods: the 18 monthly history snapshots split by *_periods; rolling: every labelled "
        "snapshot (monthly history + weekly production), newest ones = test ('newest holdout').",
    )
    rolling_window_snapshots: int = Field(
        default=30, ge=3, description="Rolling mode: the newest N labelled snapshots make the training set."
    )
    rolling_val_snapshots: int = Field(
        default=2, ge=1, description="Rolling mode: snapshots before test = val."
    )
    rolling_test_snapshots: int = Field(
        default=2, ge=1, description="Rolling mode: the newest labelled snapshots = the holdout (test)."
    )


class RolloutCheckSettings(BaseModel):
    """Checks a rollout phase must pass to advance (docs/automation.md, "Rollout advancement")."""

    min_candidate_rows: int = Field(
        default=200, ge=1, description="Candidate (shadow/canary) predictions a phase needs before a verdict."
    )
    max_latency_p95_ms: float = Field(default=250.0, gt=0, description="Candidate P95 latency at most this.")
    max_latency_ratio: float = Field(
        default=2.0, gt=0, description="Candidate P95 latency at most this multiple of the stable model's."
    )
    latency_ratio_floor_ms: float = Field(
        default=10.0,
        ge=0,
        description="The ratio limit never goes below this: P95s of a few milliseconds are held to the absolute "
        "limit only (an ensemble candidate at 6 ms against a 3-ms stable model is well inside the 45-ms SLO, "
        "and live P95s that small move with the box's load), as are batch scoring's per-row times.",
    )
    max_error_rate: float = Field(
        default=0.001,
        ge=0,
        le=1,
        description="Share of candidate requests without a valid score at most this.",
    )
    max_score_ks: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="KS statistic between the candidate's live scores and its own validation-time score "
        "distribution (registered with the version) at most this: an honest retrain scores like it did on "
        "its held-out rows, a broken model or feature pipeline does not.",
    )
    max_positive_rate_shift: float = Field(
        default=0.10,
        ge=0,
        le=1,
        description="|candidate's live share of positive decisions - its validation-time share| at most this.",
    )
    min_labelled_rows: int = Field(
        default=500, ge=1, description="Labelled candidate predictions needed before outcome metrics count."
    )
    min_auc_improvement: float = Field(
        default=0.02,
        ge=-1,
        description="Once labels exist: candidate AUC must beat the stable model's on the same labelled "
        "customers by at least this relative gain (the spec's rollback trigger: < 2 % improvement or any "
        "regression).",
    )
    outcome_weeks: int = Field(
        default=8,
        ge=1,
        description="The outcome check reads the rollout's predictions of up to this many production weeks "
        "back (labels of a week arrive after its label window).",
    )


class AutomationSettings(BaseModel):
    """Sensors, schedule and retraining triggers run by the Dagster daemon (docs/automation.md)."""

    sensor_interval_seconds: int = Field(
        default=3, ge=1, description="minimum_interval_seconds of every churnops sensor."
    )
    sensors_running_by_default: bool = Field(
        default=True, description="Sensors start RUNNING when the daemon loads the code location."
    )
    retrain_auc_threshold: float = Field(
        default=0.78, ge=0, le=1, description="Retrain when the champion's realised weekly AUC is below this."
    )
    retrain_on_estimated_auc: bool = Field(
        default=False,
        description="Also retrain when the label-free CBPE estimate is below the threshold (off: a "
        "calibrated-confidence estimate cannot see concept drift, only realised AUC is trusted).",
    )
    retrain_min_drifted_features: int = Field(
        default=3, ge=1, description="Retrain when at least this many features drift in one week."
    )
    retrain_new_labelled_rows: int = Field(
        default=10_000, ge=1, description="Retrain when MORE labelled rows arrived since the last training."
    )
    monthly_cron: str = Field(
        default="0 3 1 * *", description="Wall-clock cron of the monthly retraining schedule."
    )
    monthly_schedule_running_by_default: bool = Field(
        default=False,
        description="The wall-clock monthly schedule starts RUNNING (off: simulated months pass in minutes; "
        "the simulated-calendar monthly trigger below covers the demo).",
    )
    simulated_monthly_retrain: bool = Field(
        default=False,
        description="Retrain on the first production week of each simulated month (the schedule's "
        "counterpart in simulated time).",
    )
    demo_weeks: int = Field(default=16, ge=1, description="Production weeks `make demo` simulates.")
    demo_driver: Literal["in_process", "daemon"] = Field(
        default="in_process",
        description="Demo: who ticks the sensors and runs their runs: this process (in_process, no process "
        "start or imports per run) or a dagster-daemon the demo starts (daemon: one subprocess per run).",
    )
    demo_week_timeout_seconds: float = Field(
        default=1800.0,
        gt=0,
        description="Demo: give up when a week's runs have not finished after this (a guard against a stuck "
        "daemon; leave room for a full-scale week with a retraining, a bento build and a rollout start, "
        "docs/automation.md).",
    )
    demo_idle_seconds: float = Field(
        default=12.0,
        gt=0,
        description="Demo: a week is done when no run was queued or running for this long.",
    )
    daemon_stop_grace_seconds: float = Field(
        default=10.0, gt=0, description="Demo: SIGTERM, wait this long, then SIGKILL the daemon's group."
    )
    # The demo's scenario (docs/automation.md, "Why the demo scenario differs"): with the default 90-day
    # label a production week's outcome is known 14 weeks later, so a 16-week story could never see a
    # realised AUC of the shifted concept. The demo uses a 28-day churn label (known after 5 weeks), the
    # campaign from week 1 and the price war from week 2 (ramp 4 weeks).
    demo_label_horizon_days: int = Field(default=28, gt=0, description="Demo: churn within this many days.")
    demo_campaign_start_week: int = Field(default=1, ge=1, description="Demo: campaign start week.")
    demo_concept_shift_week: int = Field(default=2, ge=1, description="Demo: concept shift start week.")
    demo_concept_shift_ramp_weeks: int = Field(default=4, ge=1, description="Demo: concept shift ramp.")
    demo_rolling_window_snapshots: int = Field(
        default=12, ge=5, description="Demo: labelled snapshots in the rolling training window."
    )
    # Gates the demo's 28-day label cannot meet as set for the 90-day label (docs/automation.md): a
    # 3 % base rate lowers recall at the max-F1 threshold; on the rolling split the holdout is the newest,
    # drifted weeks, so train - test AUC mixes drift with overfitting; campaign customers are by design
    # not exposed to the price war, so recall differs by acquisition channel (measured values in
    # docs/automation.md).
    demo_gate_max_auc_gap: float = Field(default=0.15, ge=0, description="Demo: gate_max_auc_gap.")
    demo_gate_min_recall: float = Field(default=0.20, ge=0, le=1, description="Demo: gate_min_recall.")
    demo_gate_max_disparity: float = Field(default=0.50, ge=0, description="Demo: gate_max_disparity.")
    demo_split_mode: Literal["periods", "rolling"] = Field(
        default="rolling", description="Demo: training-set split mode (rolling = newest labelled holdout)."
    )
    demo_n_trials: int = Field(default=6, ge=1, description="Demo: Optuna trials per training (budget).")
    demo_tuning_seconds: float = Field(default=60.0, gt=0, description="Demo: Optuna seconds per training.")
    demo_n_jobs: int | None = Field(
        default=None,
        ge=1,
        description="Demo: modeling.n_jobs, threads per model fit (None = every core of this machine: the demo "
        "trains one model at a time while the live service idles).",
    )
    demo_sample_rows: int = Field(
        default=60_000,
        gt=0,
        description="Demo: modeling.sample_rows, the stratified train sample of the tuning, XGBoost and the "
        "baselines (LightGBM is refitted on the full train split either way).",
    )
    demo_baselines: list[str] = Field(
        default=["logistic_regression"],
        description="Demo: scikit-learn baselines beside LightGBM (RF/MLP fitted twice each are slow on 2 cores).",
    )
    demo_extra_candidates: list[str] = Field(
        default=[],
        description="Demo: modeling.extra_candidates (the spline logistic regression is the slowest fit of a "
        "retraining on 2 cores; the demo retrains up to 7 times, docs/automation.md).",
    )
    demo_retention_offer_uplift: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Demo: simulation.retention_offer_uplift (> 0: each week the customers the live service or "
        "batch scoring flagged get a retention offer; the A/B test compares canary and control churn). Off "
        "by default: with 0.2 the demo's retrains of weeks 7-11 were blocked by the gates (docs/automation.md).",
    )
    demo_service_start_seconds: float = Field(
        default=120.0, gt=0, description="Demo: wait this long for the live service's /ready."
    )
    demo_rollout_review: Literal["manual", "auto"] = Field(
        default="auto",
        description="Demo: serving.rollout_review (auto: the rollout checks pass the business review at 50 %, "
        "recorded as approved by auto-review).",
    )
    rollout: RolloutCheckSettings = RolloutCheckSettings()


class ServingSettings(BaseModel):
    """The BentoML service: caching, resilience, rollout and prediction log (see docs/serving.md)."""

    host: str = Field("127.0.0.1", description="Address `churnops serve` binds.")
    port: int = Field(3000, gt=0, lt=65536, description="Port `churnops serve` listens on.")
    workers: int = Field(1, ge=1, description="BentoML worker processes of the service.")
    feature_cache_ttl_seconds: float = Field(
        3600.0, ge=0, description="Online features are cached in process this long (0 = no cache)."
    )
    feature_cache_size: int = Field(100_000, gt=0, description="Customers held by the in-process cache.")
    rate_limit: str = Field(
        "1000/minute", description="Per-customer request limit (`limits` notation, e.g. 1000/minute)."
    )
    rate_limit_storage: Literal["auto", "memory", "redis"] = Field(
        "auto",
        description="Rate-limit counters in Redis (shared by workers) or per process; auto = Redis when the "
        "online store is Redis.",
    )
    redis_url: SecretUrl = Field(
        SecretUrl("redis://127.0.0.1:6379/0"),
        description="Redis for rate limits and rollout; may carry a password (shown masked).",
    )
    redis_key_prefix: str = Field("churnops:serving", description="Prefix of every serving Redis key.")
    breaker_error_rate: float = Field(
        0.05, gt=0, le=1, description="Breaker opens when feature-store errors exceed this share."
    )
    breaker_window_seconds: float = Field(30.0, gt=0, description="Sliding window of the error share.")
    breaker_min_calls: int = Field(20, ge=1, description="Calls in the window before the share counts.")
    breaker_reset_seconds: float = Field(
        2.0,
        gt=0,
        description="An open breaker half-opens after this and lets one trial call through (its success "
        "closes it): the service notices a returned store within about this long.",
    )
    feature_store_timeout_seconds: float = Field(
        0.5, gt=0, description="A feature-store read slower than this counts as a failure."
    )
    redis_timeout_seconds: float = Field(
        0.2,
        gt=0,
        description="Socket read timeout of the request path's rate-limit and rollout-state Redis commands "
        "(a slower answer counts as a failure of that store).",
    )
    redis_connect_timeout_seconds: float = Field(
        0.2,
        gt=0,
        description="Socket connect timeout of every Redis client on the request path (features, rate limit, "
        "rollout state). Request-path clients never retry a timed-out command and retry a broken "
        "connection once, at once.",
    )
    rate_limit_on_store_failure: Literal["open", "closed"] = Field(
        "open",
        description="When the rate limiter's shared Redis is unavailable: `open` counts each customer in an "
        "in-process moving window per worker (the limit then holds per worker, not across workers); "
        "`closed` answers 503 to every rate-limited request.",
    )
    request_timeout_seconds: float = Field(5.0, gt=0, description="A request running longer gets 504.")
    max_batch_size: int = Field(1000, gt=0, description="Customers or rows per request (more: 413).")
    inline_max_items: int = Field(
        0,
        ge=0,
        description="Requests of at most this many customers or rows whose work cannot block (features all "
        "in the feature cache, no request-time context) are scored in the event loop, the rate limit awaited "
        "there; the others hop to the thread pool. 0 (default) = always the thread pool: on 2 cores it "
        "measured faster (docs/serving.md, The request path).",
    )
    max_body_bytes: int = Field(1_000_000, gt=0, description="Request bodies larger than this get 413.")
    api_key: SecretStr | None = Field(
        None,
        description="The key clients send in header `x-api-key` (compared in constant time). `/rollout` "
        "(admin) always needs it and answers 403 while none is set; `churnops serve` generates and prints "
        "one when none is set and `require_api_key` is true. A secret: never shown, logged or dumped.",
    )
    require_api_key: bool = Field(
        True,
        description="`/predict` and `/predict_features` need the key too (default); false makes them "
        "public (the OpenAPI document then declares no security for them).",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A connection whose request line and headers are not complete this long after it "
        "opened (or after its previous response) is closed, with 408 when part of a request arrived.",
    )
    keep_alive_timeout_seconds: float = Field(
        5.0, gt=0, description="An idle keep-alive connection is closed after this long."
    )
    previous_retention_days: int = Field(
        14,
        ge=0,
        description="After a full rollout the previous champion stays loadable (BentoML store) and the "
        "registry's rollback target (alias `previous`) this many days.",
    )
    rollout_review: Literal["manual", "auto"] = Field(
        "manual",
        description="Business-stakeholder review at 50 %: `manual` holds a rollout at canary_50 until "
        "`churnops rollout approve --by NAME`; `auto` lets the rollout checks advance it (`make demo`). "
        "Recorded in the registry audit log either way.",
    )
    rollout_backend: Literal["file", "redis"] = Field(
        "file", description="Rollout state in a JSON file under home/serving or a Redis key."
    )
    rollout_refresh_seconds: float = Field(
        1.0, gt=0, description="The service re-reads the rollout state at most this often."
    )
    prediction_log_dir: Path | None = Field(
        None, description="Prediction log segments; None = home/prediction_log."
    )
    prediction_log_flush_seconds: float = Field(
        1.0, gt=0, description="The service flushes buffered predictions at least this often."
    )
    prediction_log_flush_rows: int = Field(5_000, gt=0, description="... or when this many are buffered.")
    explain_top_k: int = Field(3, ge=1, description="SHAP reasons returned when asked.")
    as_of: dt.date | None = Field(
        None,
        description="Simulated clock of online reads; None = the live clock file (home/serving/live_clock.json, "
        "moved by each production week) or else the newest snapshot in the offline store.",
    )
    live_clock_refresh_seconds: float = Field(
        0.25,
        gt=0,
        description="The service checks the live clock file at most this often (one stat of a small file).",
    )
    model_load_retry_seconds: float = Field(
        10.0,
        gt=0,
        description="A model version the rollout state names but the service could not load (not exported "
        "to the BentoML store yet) is retried after this long.",
    )
    shadow_queue_size: int = Field(
        1000,
        ge=1,
        description="Requests whose shadow scoring waits for the worker's one shadow-scoring thread; when "
        "full, a request's shadow work is dropped and counted (churn_shadow_dropped), never queued in the "
        "request path.",
    )
    slo_error_rate: float = Field(
        0.001,
        gt=0,
        lt=1,
        description="SLO: share of predict requests answered 5xx at most this (Prometheus alert "
        "ChurnErrorRateHigh, deploy/prometheus/rules.yml).",
    )
    slo_latency_p95_ms: float = Field(
        45.0, gt=0, description="SLO: P95 predict latency at most this (alert ChurnLatencyP95High)."
    )
    slo_latency_p99_ms: float = Field(
        120.0, gt=0, description="SLO: P99 predict latency at most this (alert ChurnLatencyP99High)."
    )


class LoggingSettings(BaseModel):
    """Log output of the service and the pipeline (see docs/operations.md, "Logs")."""

    format: Literal["console", "json"] = Field(
        "console",
        description="`console`: human-readable lines (the default); `json`: one JSON object per line "
        "(structlog), with the bound context (request id, run id, partition, step).",
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level written by the churnops loggers."
    )
    request_lines: bool = Field(
        False,
        description="The service logs one line per /predict and /predict_features request (request id, "
        "customer id hashes, model version, variant, latency, outcome). Off by default: a line per "
        "request costs the hot path a few percent of CPU.",
    )
    customer_id_hash_key: SecretStr | None = Field(
        None,
        description="Key of the keyed BLAKE2b hash that stands for customer ids in logs. Without one the "
        "hash is unkeyed, and small integer ids can be recovered by hashing candidates: set one in "
        "production. A secret: never shown, logged or dumped.",
    )

    @field_validator("customer_id_hash_key")
    @classmethod
    def _key_fits_blake2b(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not 1 <= len(value.get_secret_value().encode()) <= 64:
            raise ValueError("logging.customer_id_hash_key must be 1 to 64 bytes (a BLAKE2b key)")
        return value


class TrafficSettings(BaseModel):
    """Live traffic of a production week: the replayer that sends the week's scoring requests to the running
    service over HTTP (``churn_assets.serving.traffic``, docs/serving.md "Live traffic")."""

    enabled: bool = Field(
        default=False,
        description="Production weeks replay their scoring requests against the live service when one "
        "answers /ready at `url` (else every customer is batch scored). `make demo` turns it on, with the "
        "address of the service it starts.",
    )
    url: str | None = Field(
        default=None,
        description="The live service; None = http://127.0.0.1:{serving.port}. Loopback only.",
    )
    requests_per_second: float = Field(
        default=75.0, gt=0, le=2_000, description="Request rate of the replay."
    )
    max_requests: int = Field(
        default=300, ge=1, le=100_000, description="At most this many requests per production week."
    )
    max_seconds: float = Field(
        default=10.0, gt=0, le=600, description="A week's replay stops after this long (whatever is left)."
    )
    concurrency: int = Field(default=8, ge=1, le=256, description="Requests in flight at most.")
    customers_per_request: int = Field(
        default=1, ge=1, le=1_000, description="Customer ids in one `/predict` request."
    )
    request_timeout_seconds: float = Field(default=5.0, gt=0, description="Client timeout of one request.")
    ready_timeout_seconds: float = Field(
        default=3.0,
        gt=0,
        description="How long a week waits for the live service's /ready before batch only.",
    )
    model_load_timeout_seconds: float = Field(
        default=60.0,
        ge=0,
        description="Before the replay, wait at most this long until the service has loaded the versions the "
        "rollout names (a new champion or candidate loads in the background): the week's traffic then "
        "measures the models, not their load (0 = do not wait).",
    )

    @field_validator("url")
    @classmethod
    def _loopback_only(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from urllib.parse import urlsplit

        host = urlsplit(value).hostname or ""
        if host != "localhost" and not host.startswith("127.") and host != "::1":
            raise ValueError(
                f"traffic.url must be a loopback address (localhost, 127.x, ::1), got host {host!r}"
            )
        return value


class MonitoringSettings(BaseModel):
    """Drift and performance monitoring (see docs/monitoring.md)."""

    drift_p_value: float = Field(
        0.01, gt=0, lt=1, description="Family-wise alpha of the drift tests (Bonferroni over the features)."
    )
    ks_floor: float = Field(
        0.1, gt=0, le=1, description="Numeric features: a drift alert needs a KS statistic of at least this."
    )
    psi_floor: float = Field(
        0.1, gt=0, description="Categorical features: a drift alert needs a PSI of at least this."
    )
    medium_factor: float = Field(1.5, gt=1, description="Effect >= floor x this: severity MEDIUM.")
    high_factor: float = Field(2.5, gt=1, description="Effect >= floor x this: severity HIGH.")
    reference_max_rows: int = Field(
        1_000_000, gt=0, description="The drift reference is a seeded sample of at most this many train rows."
    )
    exclude_features: list[str] = Field(
        default=["signup_cohort", "channel_churn_rate_90d", "cohort_churn_rate_90d"],
        description="Features not drift-tested: signup_cohort is a calendar label (every new quarter is "
        "unseen in training; its age is tenure_days / tenure_months); the two group churn rates hold one "
        "value per channel / cohort, a handful of atoms that move with the churn rate every week (tracked "
        "by the performance report), so a per-row distribution test flags them every week.",
    )
    min_explained: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Root cause: a segment is named only if it explains this share of the drift.",
    )
    segment_columns: list[str] = Field(
        default=["acquisition_channel", "signup_cohort"],
        description="Root-cause hint: segments whose removal from the current window explains the shift.",
    )
    histogram_features: int = Field(
        6, ge=0, description="Overlay histograms for at most this many drifted features."
    )
    auc_threshold: float = Field(
        0.78, gt=0, lt=1, description="Performance: AUC below this triggers retraining evaluation."
    )
    decay_warning: float = Field(
        0.02, ge=0, description="Trend: an AUC drop from the baseline of more than this is 'decay'."
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address `churnops metrics serve` (the model-quality exporter) binds."
    )
    metrics_port: int = Field(
        9188, gt=0, lt=65536, description="Port of `churnops metrics serve` (Prometheus scrapes /metrics)."
    )
    seed: int = 7


class AlertSettings(BaseModel):
    """Alerts posted by the Dagster daemon's alert sensors (docs/automation.md, "Alerts")."""

    webhook_url: SecretStr | None = Field(
        None,
        description="Incoming-webhook URL (http or https) that receives every alert as Slack-compatible "
        'JSON (`{"text": ..., "blocks": [...]}`); a secret (a Slack webhook\'s path is its key): never '
        "shown, logged or dumped. None = no webhook.",
    )
    slack_token: SecretStr | None = Field(
        None,
        description="Slack bot token: when set, every alert is also posted with dagster-slack's "
        "SlackResource to `slack_channel` (a secret: never shown, logged or dumped).",
    )
    slack_channel: str = Field("#churnops-alerts", description="Slack channel of the bot-token delivery.")
    slack_api_url: str = Field(
        "https://slack.com/api/",
        pattern=r"^https?://[^\s/]+(/\S*)?/$",
        description="Base URL of the Slack Web API the bot-token delivery calls (`chat.postMessage`); "
        "another value for a proxy or a Slack-compatible server (ends with /).",
    )
    webserver_base_url: str = Field(
        "http://127.0.0.1:3000",
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="Base URL of the Dagster UI (`make ui`): an alert links `{this}/runs/{run_id}`.",
    )
    service_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="Base URL of the running churn service (`churnops serve`): the breaker sensor reads "
        "`churn_breaker_state` from its `/metrics` and alerts when the breaker opens. None = not watched.",
    )
    timeout_seconds: float = Field(
        3.0, gt=0, le=60, description="Timeout of one webhook POST (and of one /metrics read)."
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="POST attempts per alert (a timeout, a connection error or a 5xx retries).",
    )
    retry_backoff_seconds: float = Field(
        0.5, ge=0, le=10, description="Pause before the second attempt, doubled before each further one."
    )

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^https?://[^\s/]+(/\S*)?$", value.get_secret_value()):
            raise ValueError("alerts.webhook_url must be an http:// or https:// URL without spaces")
        return value


class ComputeSettings(BaseModel):
    """Where the heavy stages run (docs/scale_out.md): in this process (``local``, the default) or on a
    Dask cluster (``dask``), sharded by customer. The transformation code is the same in both."""

    engine: Literal["local", "dask"] = Field(
        "local",
        description="`local`: every stage in the run's own process; `dask`: heavy stages on a cluster.",
    )
    scheduler: str = Field(
        "local:2",
        description="The Dask scheduler: the address of a running one (`tcp://host:8786`, `tls://...`), or "
        "`local:N` to start a LocalCluster of N worker processes on loopback for the run.",
    )
    worker_memory_limit: str = Field(
        "4GiB",
        pattern=r"^\d+(\.\d+)?\s*([KMGT]i?B)?$",
        description="Memory limit of each worker a `local:N` cluster starts (Dask's syntax: 4GiB, 800MB).",
    )
    threads_per_worker: int = Field(1, ge=1, description="Threads of each worker a `local:N` cluster starts.")
    shards: int = Field(
        8, ge=1, description="Customer shards: a stable hash of customer_id assigns each customer to one."
    )
    connect_timeout_seconds: float = Field(
        10.0, gt=0, description="How long to wait for a remote scheduler before failing the run."
    )
    lightgbm_data_parallel_min_rows: int = Field(
        1_000_000,
        ge=0,
        description="LightGBM is fitted data-parallel on the workers (lightgbm.dask) from this many train rows "
        "on; a smaller train split, which the run process holds anyway for the evaluation, is fitted there "
        "with the local engine's code — the same model as the local engine, where data-parallel bins "
        "found per worker would give a slightly different one. 0: always data-parallel.",
    )
    drift_ks_sample_rows: int = Field(
        1_000_000,
        ge=1_000,
        description="Drift on the Dask engine: the KS test of a numeric feature runs on a sample of at most "
        "about this many current rows, kept by a hash of customer_id (the same rows whatever the shard "
        "count); a window of at most this many rows is tested whole, exactly as by the local engine. "
        "Counts, PSI, chi-square, null shares and means are merged exactly from every shard.",
    )

    @field_validator("scheduler")
    @classmethod
    def _scheduler_address(cls, value: str) -> str:
        if re.fullmatch(r"local:[1-9]\d*", value) or re.fullmatch(r"(tcp|tls|inproc|ucx)://\S+", value):
            return value
        raise ValueError(
            f"compute.scheduler must be `local:N` (N >= 1 worker processes) or a scheduler address such as "
            f"tcp://host:8786, not {value!r}"
        )

    @property
    def local_workers(self) -> int | None:
        """N of a `local:N` scheduler, None for the address of a running scheduler."""
        return int(self.scheduler.split(":", 1)[1]) if self.scheduler.startswith("local:") else None


class DeploymentSettings(BaseModel):
    """The Kubernetes deployment that ``churnops deploy render`` writes under ``deploy/`` (docs/scale_out.md).

    The serving figures default to the spec's scaling section (2-20 instances, 60 % CPU, 75 % memory);
    every rendered manifest takes its figures from here, so the committed manifests and these settings
    cannot drift apart (tests/deploy checks it).
    """

    namespace: str = Field(
        "churnops",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Kubernetes namespace of every part.",
    )
    image: str = Field(
        "churnops:0.1.0",
        description="The platform image (deploy/Dockerfile, `make container`): the Dagster code location, "
        "daemon, webserver, run pods, the MLflow server and the Dask scheduler and workers.",
    )
    serving_image: str = Field(
        "churn_service:latest",
        description="The serving image: the built bento containerized (`make container`).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="imagePullPolicy of every churnops container."
    )
    serving_min_replicas: int = Field(2, ge=1, description="HPA minReplicas of the serving Deployment.")
    serving_max_replicas: int = Field(20, ge=1, description="HPA maxReplicas of the serving Deployment.")
    serving_target_cpu_percent: int = Field(
        60, ge=1, le=100, description="HPA target: average CPU utilization (% of the CPU request)."
    )
    serving_target_memory_percent: int = Field(
        75, ge=1, le=100, description="HPA target: average memory utilization (% of the memory request)."
    )
    serving_cpu_request: str = Field("1", description="CPU request of a serving pod (the HPA's 100 %).")
    serving_cpu_limit: str = Field("2", description="CPU limit of a serving pod.")
    serving_memory: str = Field(
        "2Gi", description="Memory request and limit of a serving pod (the HPA's 100 % of memory)."
    )
    serving_pdb_min_available: int = Field(
        1, ge=1, description="PodDisruptionBudget: serving pods kept through voluntary disruptions."
    )
    readiness_period_seconds: int = Field(5, ge=1, description="Readiness probe (/readyz) period.")
    readiness_failure_threshold: int = Field(
        3, ge=1, description="Failed /readyz probes in a row before the pod leaves the Service."
    )
    liveness_period_seconds: int = Field(10, ge=1, description="Liveness probe (/livez) period.")
    liveness_failure_threshold: int = Field(
        3, ge=1, description="Failed /livez probes in a row before the kubelet restarts the container."
    )
    probe_timeout_seconds: int = Field(2, ge=1, description="Timeout of each readiness / liveness probe.")
    startup_timeout_seconds: int = Field(
        180,
        ge=10,
        description="A serving pod may take this long to answer /livez (loading the models) before the "
        "liveness probe applies (startup probe: period 5 s x this / 5 failures).",
    )
    termination_grace_seconds: int = Field(
        30, ge=1, description="Grace period of a stopping serving pod (it flushes its prediction log)."
    )
    run_cpu: str = Field("2", description="CPU request of a Dagster run pod (K8sRunLauncher).")
    run_memory: str = Field(
        "16Gi",
        description="Memory request and limit of a Dagster run pod: the in-process engine holds a whole "
        "stage (a full-scale training run peaks near 7.2 GB, docs/benchmarks.md).",
    )
    dask_workers_min: int = Field(1, ge=0, description="DaskAutoscaler minimum of Dask workers.")
    dask_workers_max: int = Field(10, ge=1, description="DaskAutoscaler maximum of Dask workers.")
    dask_worker_cpu: str = Field("1", description="CPU request and limit of a Dask worker pod.")
    dask_worker_memory: str = Field(
        "4Gi", description="Memory request and limit of a Dask worker pod (its --memory-limit too)."
    )
    storage_class: str | None = Field(
        None, description="StorageClass of the volume claims; None = the cluster's default class."
    )
    data_volume_size: str = Field(
        "100Gi",
        description="The shared ReadWriteMany volume holding CHURNOPS_HOME (landing, warehouse, training, "
        "BentoML store, prediction log) for run pods, the code location and serving.",
    )
    postgres_volume_size: str = Field("20Gi", description="PostgreSQL data volume.")
    mlflow_artifacts_volume_size: str = Field("50Gi", description="MLflow artifact store volume.")
    redis_volume_size: str = Field("5Gi", description="Redis append-only-file volume.")
    redis_image: str = Field("redis:7.4", description="Image of the Redis StatefulSet.")
    postgres_image: str = Field("postgres:16", description="Image of the PostgreSQL StatefulSet.")

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentSettings:
        if self.serving_min_replicas > self.serving_max_replicas:
            raise ValueError(
                f"deployment.serving_min_replicas ({self.serving_min_replicas}) must be at most "
                f"deployment.serving_max_replicas ({self.serving_max_replicas})"
            )
        if self.serving_pdb_min_available >= self.serving_min_replicas:
            raise ValueError(
                f"deployment.serving_pdb_min_available ({self.serving_pdb_min_available}) must be below "
                f"deployment.serving_min_replicas ({self.serving_min_replicas}), or no pod could ever be evicted"
            )
        if self.dask_workers_min > self.dask_workers_max:
            raise ValueError(
                f"deployment.dask_workers_min ({self.dask_workers_min}) must be at most "
                f"deployment.dask_workers_max ({self.dask_workers_max})"
            )
        return self


class Settings(BaseSettings):
    """Root settings. ``home`` holds every piece of local state (git-ignored)."""

    model_config = SettingsConfigDict(
        env_prefix="CHURNOPS_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    home: Path = Field(Path(".churnops"), description="Folder for all local state.")
    scale: Literal["tiny", "small", "full"] | None = Field(
        None, description="Shortcut for simulation.n_customers (tiny=2k, small=20k, full=500k)."
    )
    simulation: SimulationSettings = SimulationSettings()
    feature_store: FeatureStoreSettings = FeatureStoreSettings()
    contracts: ContractSettings = ContractSettings()
    modeling: ModelingSettings = ModelingSettings()
    automation: AutomationSettings = AutomationSettings()
    serving: ServingSettings = ServingSettings()
    traffic: TrafficSettings = TrafficSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    logging: LoggingSettings = LoggingSettings()
    alerts: AlertSettings = AlertSettings()
    deployment: DeploymentSettings = DeploymentSettings()
    compute: ComputeSettings = ComputeSettings()
    duckdb_memory_limit: str = Field(
        "4GB", description="DuckDB buffer limit of the warehouse (it spills to disk beyond it)."
    )
    postgres_url: SecretUrl = Field(
        SecretUrl("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
        description="PostgreSQL server of the tests and benchmarks that need one; may carry a password.",
    )

    @model_validator(mode="after")
    def _apply_scale(self) -> Settings:
        if self.scale is not None:
            self.simulation = self.simulation.model_copy(update={"n_customers": SCALES[self.scale]})
        self.home = self.home.expanduser().resolve()
        return self

    @property
    def contract_date_bounds(self) -> tuple[dt.date, dt.date]:
        """Inclusive plausible range of every raw date column (``contracts.*_plausible_date``)."""
        earliest = self.contracts.earliest_plausible_date
        if earliest is None:
            span = dt.timedelta(days=int(self.simulation.initial_tenure_years * 365.25) + 1)
            earliest = dt.date((self.simulation.start_date - span).year, 1, 1)
        return earliest, self.contracts.latest_plausible_date

    # Derived paths: one place decides the layout of the state folder.
    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def online_sqlite_path(self) -> Path:
        return self.home / "online_store.sqlite"

    @property
    def world_state_path(self) -> Path:
        return self.home / "world" / "state.pkl"

    @property
    def sharded_world_dir(self) -> Path:
        """State of a world generated as customer shards (``churnops simulate --shards N``)."""
        return self.home / "world" / "shards"

    @property
    def training_dir(self) -> Path:
        """The training assets' work folder (training set, candidates, challenger, champion decision)."""
        return self.home / "training"

    @property
    def mlflow_dir(self) -> Path:
        """Default MLflow tracking database and artifact root (when ``modeling.tracking_uri`` is unset)."""
        return self.home / "mlflow"

    @property
    def optuna_dir(self) -> Path:
        """Default Optuna study storage (when ``modeling.optuna_storage`` is unset)."""
        return self.home / "optuna"

    @property
    def registry_dir(self) -> Path:
        """Default promotion audit log (when ``modeling.audit_url`` is unset)."""
        return self.home / "registry"

    @property
    def logs_dir(self) -> Path:
        """Log files of the processes churnops starts (the demo's Dagster daemon)."""
        return self.home / "logs"

    @property
    def monitoring_dir(self) -> Path:
        return self.home / "monitoring"

    @property
    def monitoring_metrics_path(self) -> Path:
        """Model-quality gauges in the Prometheus text format, written by the weekly monitoring step."""
        return self.monitoring_dir / "metrics.prom"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def serving_dir(self) -> Path:
        return self.home / "serving"

    @property
    def alerts_dir(self) -> Path:
        """The alert ledger (which alerts were delivered: each is sent once)."""
        return self.home / "alerts"

    @property
    def prediction_log_dir(self) -> Path:
        return self.serving.prediction_log_dir or self.home / "prediction_log"


def _revealed(value: Any) -> Any:
    """A python-mode settings dump with every secret replaced by its value."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _revealed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_revealed(v) for v in value]
    return value


def settings_env(settings: Settings) -> dict[str, str]:
    """``CHURNOPS_*`` variables that reproduce ``settings`` in another process: one per top-level field
    (nested sections as JSON), unset fields (None) left out. Secrets are written in clear (the child
    needs them): the result is an environment to hand to a process, never something to print."""
    env: dict[str, str] = {}
    for name, value in to_jsonable_python(_revealed(settings.model_dump())).items():
        if value is None:
            continue
        env[f"CHURNOPS_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def child_env(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of a child process that must see ``settings``: ``base`` (the parent's environment)
    without its ``CHURNOPS_*`` variables, plus :func:`settings_env`."""
    return {k: v for k, v in base.items() if not k.startswith("CHURNOPS_")} | settings_env(settings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` in tests)."""
    return Settings()
