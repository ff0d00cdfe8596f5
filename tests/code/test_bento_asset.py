"""``serving/champion_bento`` keeps the bento of a kept champion in every way a run is started: launched
(the run has no asset selection) or in process (``execute_in_process``: an empty selection)."""

import json
from pathlib import Path

import dagster as dg

from churn_assets.defs.assets.serving import _kept_bento
from churn_assets.defs.keys import CHAMPION
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.settings import Settings


def test_a_kept_champion_keeps_its_bento_when_the_job_runs_in_process(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    decision = TrainingWorkdir.of(settings).champion
    decision.parent.mkdir(parents=True, exist_ok=True)
    (settings.bentoml_home / "bentos" / "churn_service" / "built1").mkdir(parents=True)
    seen: dict[str, str | None] = {}

    @dg.asset(key=CHAMPION)
    def champion() -> None:
        decision.write_text(json.dumps({"outcome": "kept"}))

    @dg.asset(deps=[CHAMPION])
    def bento(context: dg.AssetExecutionContext) -> None:
        seen["tag"] = _kept_bento(context, settings)

    job = dg.define_asset_job("retrain_like", selection=[CHAMPION, bento.key])
    defs = dg.Definitions(assets=[champion, bento], jobs=[job])
    assert defs.resolve_job_def("retrain_like").execute_in_process().success
    assert seen["tag"] == "churn_service:built1"  # no rebuild
    decision.write_text(json.dumps({"outcome": "promoted"}))
    result = dg.materialize([bento], selection=[bento.key])  # a run without the decision: build
    assert result.success and seen["tag"] is None
