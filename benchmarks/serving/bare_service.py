"""The bare comparison: a BentoML service that only loads the same LightGBM model (no features, no routing,
no log) and scores the feature row it is sent with ``@bentoml.api`` — BentoML's default path. Its one-row
predict runs on one thread, as the churn service's does (OpenMP's thread team costs more than the predict),
so the comparison measures the serving path, not LightGBM's threading."""

import json

import bentoml
import numpy as np

from churn_assets.serving.bento_build import load_exported, manifest_path
from churn_assets.settings import get_settings

MANIFEST = json.loads(manifest_path(get_settings()).read_text())


@bentoml.service(name="bare_lightgbm", workers=2, logging={"access": {"enabled": False}})
class BareService:
    model_ref = bentoml.models.BentoModel(MANIFEST["stable"])

    def __init__(self) -> None:
        self.model = load_exported(self.model_ref.path)

    @bentoml.api
    def predict(self, row: list[float]) -> float:
        return float(self.model._booster.predict(np.asarray([row], dtype=np.float64), num_threads=1)[0])
