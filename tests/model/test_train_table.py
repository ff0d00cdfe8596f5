"""Bring-your-own-table: cleaning of the real Telco file, helpful errors, and the CLI end to end.

What the end-to-end test asserts (honestly): on a stratified 70/15/15 holdout of the Telco file,
with a small tuning budget (12 trials / 60 s), the registered model's test AUC is >= 0.83, not below
any baseline's test AUC ON THE SAME SPLIT minus 0.01, and calibration costs the chosen candidate at most
0.001 of test AUC. The data README's 0.845 is a 5-fold CV figure on the whole file, so it is not directly
comparable to one 1,057-row holdout (whose AUC has a standard error of about 0.013).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import typer
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from churn_assets.cli.modeling import register
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.splits import TrainingDataError, assign_by_time_share
from churn_assets.modeling.tracking import configure, list_runs, log_candidate_run
from churn_assets.modeling.train_table import clean_table, infer_contract, profile_table, read_table
from churn_assets.modeling.training_set import feature_names
from churn_assets.settings import Settings, get_settings
from tests.modeling_helpers import TELCO_CSV


@pytest.fixture(scope="module")
def telco() -> pd.DataFrame:
    return read_table(TELCO_CSV)


def test_profile_sees_the_quirks(telco) -> None:
    profile = profile_table(telco, "Churn", "Yes")
    assert profile.rows == 7043 and len(profile.columns) == 21
    assert profile.target_rate == pytest.approx(0.265, abs=0.001)
    cols = {c.name: c for c in profile.columns}
    assert cols["TotalCharges"].blank_strings == 11 and cols["TotalCharges"].dtype == "float"
    assert cols["SeniorCitizen"].dtype == "integer" and cols["Partner"].dtype == "yes/no"


def test_cleaning_handles_dirty_real_data(telco) -> None:
    table = clean_table(telco, "Churn", "Yes")
    assert table.dropped == ["customerID"]
    assert table.X["TotalCharges"].isna().sum() == 11
    assert pd.api.types.is_float_dtype(table.X["TotalCharges"])
    assert set(table.X["Partner"].unique()) == {0, 1}
    assert set(table.X["SeniorCitizen"].unique()) == {0, 1}
    assert isinstance(table.X["Contract"].dtype, pd.CategoricalDtype)
    assert table.y.mean() == pytest.approx(0.265, abs=0.001)
    contract = infer_contract(table)
    assert set(contract.columns) == {*table.X.columns, "Churn"}
    assert "TotalCharges" in contract.to_yaml()


@pytest.mark.parametrize(
    ("target", "positive", "message"),
    [
        ("churn", "Yes", "target column 'churn' not found; columns are: customerID"),
        ("Churn", "yes", "'No', 'Yes'"),
    ],
)
def test_bad_target_or_positive_value_lists_the_choices(telco, target, positive, message) -> None:
    with pytest.raises(TrainingDataError, match=message):
        clean_table(telco, target, positive)


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("CHURNOPS_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    app = typer.Typer()
    register(app)
    yield lambda *args: CliRunner().invoke(app, [str(a) for a in args])
    get_settings.cache_clear()


def test_cli_error_names_the_bad_column(cli) -> None:
    result = cli("train-table", TELCO_CSV, "--target", "Churned", "--positive", "Yes")
    assert result.exit_code == 2
    assert "Churned" in result.stderr and "customerID" in result.stderr


@pytest.mark.e2e
def test_telco_end_to_end_through_the_cli(cli) -> None:
    result = cli(
        "train-table",
        TELCO_CSV,
        "--target",
        "Churn",
        "--positive",
        "Yes",
        "--trials",
        12,
        "--budget-seconds",
        60,
        "--json",
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    summary = json.loads(result.stdout)  # --json: the whole stdout is one JSON document
    assert summary["split"]["kind"] == "stratified"
    assert summary["model_name"] == "telco-customer-churn"  # its own registered model, named after the file
    assert summary["model_version"] == "1" and summary["semver"] == "1.0.0"
    assert set(summary["baselines"]) == {
        "logistic_regression",
        "random_forest",
        "hist_gradient_boosting",
        "mlp",
    }
    assert summary["test_auc"] >= 0.83
    best_test_auc = summary["candidates_test_auc"][summary["best_model"]]
    assert best_test_auc >= summary["baselines"]["logistic_regression"] - 0.01
    assert summary["test_auc"] >= summary["baselines"]["logistic_regression"] - 0.01

    assert summary["test_auc"] >= max(summary["baselines"].values()) - 0.01
    assert summary["test_auc"] >= summary["candidates_test_auc"][summary["best_model"]] - 0.001  # calibration
    table = json.loads(cli("experiments", "--json").stdout)  # the latest training run's table
    assert {r["training_run_id"] for r in table} == {summary["experiment_run_id"]}
    assert {r["model"] for r in table} >= {"lightgbm", "xgboost", "logistic_regression", "mlp"}
    assert all(r["test_auc"] is not None and r["f1"] is not None for r in table)
    runs = json.loads(cli("experiments", "--all", "--json").stdout)  # every MLflow run
    assert {r["model"] for r in runs} >= {"lightgbm", "logistic_regression", "mlp"}
    audit = json.loads(cli("audit", "--model-name", "telco-customer-churn", "--json").stdout)
    assert audit[0]["action"] == "register"
    assert audit[-1]["action"] in {"promoted", "kept"}
    assert json.loads(cli("audit", "--json").stdout) == []  # the production model saw nothing


def test_id_like_columns_are_dropped_but_not_lookalikes() -> None:
    n = 60
    df = pd.DataFrame(
        {
            "customer_id": [f"{i}" for i in range(n)],
            "accountID": [f"A-{i}" for i in range(n)],
            "amount_paid": [f"{i * 1.5}" for i in range(n)],
            "valid": ["yes", "no"] * (n // 2),
            "Churn": ["1", "0", "0"] * (n // 3),
        }
    )
    table = clean_table(df, "Churn", "1")
    assert table.dropped == ["customer_id", "accountID"]
    assert list(table.X.columns) == ["amount_paid", "valid"]
    assert table.X["valid"].dtype == "int64"


def test_time_column_is_not_a_feature_and_drives_a_time_split() -> None:
    n = 200
    df = pd.DataFrame(
        {
            "month": [str(1 + i % 20) for i in range(n)],
            "usage": [str(i % 7) for i in range(n)],
            "Churn": ["Yes", "No"] * (n // 2),
        }
    )
    table = clean_table(df, "Churn", "Yes", time_col="month")
    assert "month" not in table.X.columns and table.time is not None
    assignment = assign_by_time_share(table.time, 0.15, 0.15)
    months = pd.to_numeric(table.time)
    assert months[assignment == "train"].max() < months[assignment == "val"].min()
    assert months[assignment == "val"].max() < months[assignment == "test"].min()


def _small_table(path, n: int = 1500, seed: int = 3):
    """A bring-your-own CSV with 10 numeric features f0..f9 (none of them in the feature store)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 10))
    logit = X[:, :8] @ np.linspace(1.0, 0.6, 8) - 1.0
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(X.round(4), columns=[f"f{i}" for i in range(10)])
    frame["churned"] = np.where(y, "yes", "no")
    frame.to_csv(path, index=False)
    return path


def _production_champion(settings: Settings, auc: float = 0.6) -> str:
    """A champion of the production model on feature-store features, with a modest recorded AUC."""
    names = feature_names()[:3]
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=names)
    y = (X.iloc[:, 0] + rng.normal(size=200) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    metrics = {"auc": auc, "threshold": 0.5}
    logged = log_candidate_run(configure(settings), "production", model, "sklearn", {}, metrics)
    registry = ModelRegistry(settings)
    version = registry.register(logged, names, "d" * 64, metrics, [])
    assert registry.consider(version.version, auc, None, []).promoted
    return version.version


def test_train_table_leaves_the_production_champion_alone(cli, tmp_path, monkeypatch) -> None:
    """A table trained beside a production champion gets its own registered model; the production
    model's versions and aliases stay exactly as they were. (The calibration gate is loosened so that
    the small table passes every gate: it would then beat the champion's recorded AUC by far.)"""
    monkeypatch.setenv("CHURNOPS_MODELING__GATE_MAX_CALIBRATION_ERROR", "0.5")
    get_settings.cache_clear()
    settings = get_settings()
    champion = _production_champion(settings)
    production = ModelRegistry(settings)
    before = (production.aliases(), [v.version for v in production.versions()])
    csv = _small_table(tmp_path / "My Shop churn.csv")

    result = cli(
        "train-table",
        csv,
        "--target",
        "churned",
        "--positive",
        "yes",
        "--trials",
        2,
        "--budget-seconds",
        20,
        "--json",
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    summary = json.loads(result.stdout)
    assert (production.aliases(), [v.version for v in production.versions()]) == before
    assert summary["model_name"] == "my-shop-churn"
    assert production.aliases()["champion"] == champion
    own = ModelRegistry(settings, name="my-shop-churn")
    assert [str(v.version) for v in own.versions()] == [summary["model_version"]]
    assert summary["promotion"] in {"promoted", "kept"}
    if summary["promotion"] == "promoted":
        assert own.aliases()["champion"] == summary["model_version"]
    audit = json.loads(cli("audit", "--model-name", "my-shop-churn", "--json").stdout)
    assert audit[0]["action"] == "register"
    assert all(e["model"] == "my-shop-churn" for e in audit)
    assert len(ModelRegistry(settings).read_audit()) == 2  # production: its register + promoted only

    # Another table (other columns) under the same model name: its champion cannot be scored on the new
    # holdout, so the AUCs are not compared and the champion stays.
    other = pd.read_csv(csv).rename(columns={f"f{i}": f"g{i}" for i in range(10)})
    other.to_csv(tmp_path / "other.csv", index=False)
    result = cli(
        "train-table",
        tmp_path / "other.csv",
        "--target",
        "churned",
        "--positive",
        "yes",
        "--trials",
        2,
        "--budget-seconds",
        20,
        "--model-name",
        "my-shop-churn",
        "--json",
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    second = json.loads(result.stdout)
    if summary["promotion"] == "promoted":
        assert second["promotion"] == "kept" and "not compared" in second["promotion_reason"]
        assert "f0" in second["promotion_reason"]
        assert own.aliases()["champion"] == summary["model_version"]
    assert production.aliases()["champion"] == champion


def test_train_table_under_the_production_name_is_refused_naming_the_features(cli, tmp_path) -> None:
    settings = get_settings()
    _production_champion(settings)
    production = ModelRegistry(settings)
    before = [v.version for v in production.versions()]
    csv = _small_table(tmp_path / "shop.csv", n=200)
    result = cli(
        "train-table",
        csv,
        "--target",
        "churned",
        "--positive",
        "yes",
        "--model-name",
        settings.modeling.registered_model_name,
    )
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "churn-model" in message and "f0, f1" in message and "feature store" in message
    assert [v.version for v in production.versions()] == before
    assert not (settings.mlflow_dir / "mlflow.db").exists() or len(list_runs(settings)) == 1
