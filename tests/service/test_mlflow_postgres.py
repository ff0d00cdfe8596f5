"""MLflow tracking + model registry (and the audit log) on the real PostgreSQL server."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression

from churn_assets.modeling.evaluation import GateResult
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.modeling.splits import assign_stratified, build_splits
from churn_assets.modeling.tracking import configure, list_runs, load_model, log_candidate_run
from churn_assets.modeling.tuning import tune_lightgbm
from tests.modeling_helpers import modeling_settings, synthetic_churn

pytestmark = pytest.mark.service

DATABASE = "churnops_mlflow_test"


@pytest.fixture
def pg_database(fresh_postgres_database) -> str:
    return fresh_postgres_database(DATABASE)


def test_tracking_registry_and_audit_on_postgres(tmp_path, pg_database: str) -> None:
    settings = modeling_settings(
        tmp_path / "home", tracking_uri=pg_database, audit_url=pg_database, optuna_storage=pg_database
    )
    tracking = configure(settings)
    assert tracking.uri.startswith("postgresql")

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x1": rng.normal(size=300), "x2": rng.normal(size=300)})
    y = (X["x1"] + 0.5 * rng.normal(size=300) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    logged = log_candidate_run(
        tracking, "lr", model, "sklearn", {"C": 1.0}, {"auc": 0.9, "train_seconds": 0.1}
    )
    assert [r["run_id"] for r in list_runs(settings)] == [logged.run_id]
    # artifacts go to the explicit artifact root under the state folder, not the cwd
    assert (tmp_path / "home" / "mlflow" / "artifacts").is_dir()

    registry = ModelRegistry(settings, name="pg-model")  # x1, x2: not feature-store features
    gates = [GateResult("min_test_auc", 0.9, 0.7, True)]
    v1 = registry.register(logged, ["x1", "x2"], "d" * 64, {"auc": 0.90}, gates)
    assert registry.consider(v1.version, 0.90, None, gates).promoted
    v2 = registry.register(logged, ["x1", "x2"], "d" * 64, {"auc": 0.95}, gates)
    assert registry.consider(v2.version, 0.95, 0.90, gates).promoted
    assert registry.aliases() == {"champion": v2.version, "previous": v1.version}
    assert registry.tags(v2.version)["semver"] == "1.0.1"  # same artifact re-registered: patch bump
    champion = load_model(f"models:/{registry.name}@champion", "sklearn")
    np.testing.assert_allclose(champion.predict_proba(X), model.predict_proba(X))

    with sa.create_engine(pg_database).connect() as con:
        actions = con.execute(sa.text("select action from registry_audit order by id")).scalars().all()
        assert actions == ["register", "promoted", "register", "promoted"]
        assert con.execute(sa.text("select count(*) from registered_models")).scalar() == 1


def test_optuna_study_resumes_on_postgres(pg_database: str) -> None:
    X, y, _ = synthetic_churn(800, seed=2)
    splits = build_splits(X, y, assign_stratified(y, seed=2))
    tune_lightgbm(splits, pg_database, "pg-study", n_trials=2, timeout_seconds=60)
    second = tune_lightgbm(splits, pg_database, "pg-study", n_trials=3, timeout_seconds=60)
    assert second.n_run_now == 1
    assert len(optuna.load_study(study_name="pg-study", storage=pg_database).trials) == 3
