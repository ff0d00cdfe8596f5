"""An ENSEMBLE champion served as it was built, through a real BentoML service (``bentoml serve`` on a free
port, the real Redis as online store): its members are loaded in the bento and scored one by one per
request, blended and calibrated — the same probabilities as the fitted ensemble's ``predict_proba`` on the
store's features — with SHAP reasons from the tree members and each member's latency in ``/metrics``."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV

from churn_assets.feature_store.online import RedisOnlineStore
from churn_assets.modeling.registry import ModelRegistry
from churn_assets.serving.bento_build import bento_tag_of, model_store, sync_rollout, write_manifest
from churn_assets.serving.scoring import ScoringModel
from churn_assets.settings import Settings
from tests.serving.conftest import free_port, start_service, stop_service, wait_ready
from tests.serving_helpers import (
    AS_OF,
    ensemble_model,
    feature_frame,
    fill_online_store,
    register,
    remove_scratch_state,
    serving_settings,
)

pytestmark = [pytest.mark.service, pytest.mark.timeout(300)]

CUSTOMERS = 200
MEMBERS = ("lightgbm", "xgboost", "logistic_regression")
WEIGHTS = {
    "lightgbm": 0.5,
    "xgboost": 0.3,
    "logistic_regression": 0.2,
}  # tests/serving_helpers.ensemble_model


@dataclass
class EnsembleService:
    url: str
    settings: Settings
    api_key: str
    model: CalibratedClassifierCV
    version: str
    store: RedisOnlineStore

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, headers={"x-api-key": self.api_key})


@pytest.fixture(scope="module")
def ensemble_service(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[EnsembleService]:
    home = tmp_path_factory.mktemp("ensemble-service")
    prefix = f"churnops-test:{uuid.uuid4().hex[:12]}"
    api_key = uuid.uuid4().hex
    settings = serving_settings(home, redis_key_prefix=f"{prefix}:serving", redis_url=redis_url)
    model = ensemble_model(feature_frame(range(1, 801), seed=4))
    version = register(settings, model, threshold=0.45, auc=0.8, flavor="sklearn")
    registry = ModelRegistry(settings)  # the tags the challenger step sets on an ensemble version
    registry.client.set_model_version_tag(registry.name, version, "calibration", "sigmoid")
    registry.client.set_model_version_tag(registry.name, version, "ensemble_members", json.dumps(WEIGHTS))
    store = RedisOnlineStore(redis_url, f"{prefix}:fs")
    fill_online_store(store, range(1, CUSTOMERS + 1))
    write_manifest(settings, sync_rollout(settings))  # first deployment: the ensemble is the stable model
    overrides = {
        "CHURNOPS_HOME": str(home),
        "CHURNOPS_FEATURE_STORE__ONLINE_BACKEND": "redis",
        "CHURNOPS_FEATURE_STORE__REDIS_URL": redis_url,
        "CHURNOPS_FEATURE_STORE__REDIS_KEY_PREFIX": f"{prefix}:fs",
        "CHURNOPS_SERVING__REDIS_URL": redis_url,
        "CHURNOPS_SERVING__REDIS_KEY_PREFIX": f"{prefix}:serving",
        "CHURNOPS_SERVING__AS_OF": AS_OF.date().isoformat(),
        "CHURNOPS_SERVING__API_KEY": api_key,
    }
    port = free_port()
    process = start_service(settings, overrides, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, home / f"service-{port}.log")
        yield EnsembleService(url, settings, api_key, model, version, store)
    finally:
        stop_service(process)
        remove_scratch_state(store, redis_url, prefix)


def test_ensemble_is_scored_member_by_member_like_its_predict_proba(
    ensemble_service: EnsembleService,
) -> None:
    svc = ensemble_service
    ids = list(range(1, 41))
    with svc.client() as client:
        r = client.post("/predict", json={"customer_ids": ids, "explain": True})
    assert r.status_code == 200, r.text
    items = r.json()["predictions"]
    rows = [c.values for c in svc.store.read(ids, now=AS_OF).customers]
    reference = ScoringModel("reference", svc.version, svc.model, list(rows[0]), 0.45, flavor="sklearn")
    features = reference.frame(rows)  # the store's rows with the training dtypes
    expected = svc.model.predict_proba(features)[:, 1]
    np.testing.assert_allclose([i["probability"] for i in items], expected, rtol=1e-6)
    for item in items:
        assert item["model_version"] == svc.version
        assert item["label"] == int(item["probability"] >= 0.45)
        # SHAP-style reasons from the LightGBM and XGBoost members
        assert len(item["reasons"]) == 3 and {"feature", "contribution"} <= set(item["reasons"][0])
    # The exported model's metadata says what is served: the calibrator and the members with their weights.
    exported = model_store(svc.settings).get(bento_tag_of(svc.settings, svc.version))
    assert exported.info.metadata["calibration"] == "sigmoid"
    assert exported.info.metadata["ensemble_members"] == WEIGHTS


def test_each_member_latency_is_in_the_metrics(ensemble_service: EnsembleService) -> None:
    with ensemble_service.client() as client:
        for start in range(1, 101, 20):
            assert (
                client.post("/predict", json={"customer_ids": list(range(start, start + 20))}).status_code
                == 200
            )
        text = client.get("/metrics").text
    for member in MEMBERS:
        pattern = (
            rf'churn_member_seconds_count\{{[^}}]*member="{member}"[^}}]*'
            rf'model_version="{ensemble_service.version}"[^}}]*\}} (\d+(\.\d+)?)'
        )
        found = re.search(pattern, text)
        assert found is not None, f"no churn_member_seconds for {member} in /metrics"
        assert float(found.group(1)) >= 5  # one observation per scored batch
