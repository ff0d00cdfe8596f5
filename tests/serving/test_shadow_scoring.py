"""Shadow scoring off the request path: one thread per worker scores the candidate's shadow work from a
bounded queue (``serving.runtime.ShadowScorer``); a full queue drops work and counts it
(``churn_shadow_dropped``); a version loaded while the service runs is warmed up and frozen before it takes
traffic. Through the fast-path app in process (a real Runtime, SQLite online store, LightGBM models)."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import prometheus_client
import pytest

from churn_assets.serving.app import build_app
from churn_assets.serving.prediction_log import read_predictions
from churn_assets.serving.rollout import RolloutState, RolloutStore
from churn_assets.serving.runtime import Runtime, ShadowScorer
from churn_assets.serving.scoring import ScoringModel
from tests.serving_helpers import feature_frame, feature_names, in_process_runtime, train_model

pytestmark = pytest.mark.timeout(120)


def test_shadow_work_is_scored_in_order_on_one_thread_and_a_full_queue_drops() -> None:
    release = threading.Event()
    scored: list[tuple[str, int]] = []

    def score(work: Any) -> None:
        release.wait(10)
        scored.append((threading.current_thread().name, work[0][1]))

    scorer = ShadowScorer(score, capacity=2)
    assert scorer.submit([(None, 1, {})])  # taken by the thread, which waits
    for _ in range(1000):  # until the thread has taken the first one
        if scorer._queue.qsize() == 0:
            break
        threading.Event().wait(0.01)
    assert scorer.submit([(None, 2, {})]) and scorer.submit([(None, 3, {})])  # the queue holds 2
    assert not scorer.submit([(None, 4, {})])  # full: dropped, never blocks the caller
    release.set()
    assert scorer.drain(10)
    assert scored == [("shadow-scorer", 1), ("shadow-scorer", 2), ("shadow-scorer", 3)]
    thread = scorer._thread
    scorer.close()
    assert thread is not None and not thread.is_alive()


def _post(rt: Runtime, ids: list[int]) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_app(rt.settings, lambda: rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/predict", json={"customer_ids": ids})

    return asyncio.run(call())


def _candidate(version: str) -> ScoringModel:
    return ScoringModel(
        "churn-model", version, train_model(feature_frame(range(1, 201)), 7), feature_names(), 0.5
    )


def test_a_shadow_candidate_is_scored_after_the_response_and_logged(tmp_path: Path) -> None:
    with in_process_runtime(tmp_path, 20, require_api_key=False) as rt:
        rt.models["2"] = _candidate("2")
        RolloutStore(rt.settings).save(
            RolloutState(phase="shadow", stable_version="1", candidate_version="2")
        )
        threads: list[str] = []
        score = rt.shadow._score
        rt.shadow._score = lambda work: (threads.append(threading.current_thread().name), score(work))
        r = _post(rt, [3, 4])
        assert r.status_code == 200, r.text
        assert {p["model_version"] for p in r.json()["predictions"]} == {"1"}
        assert rt.shadow.drain(10)
        rt.writer.flush()
        log = read_predictions(rt.settings)
        shadow = log.filter(pl.col("variant") == "shadow")
        assert sorted(shadow["customer_id"].to_list()) == [3, 4]
        assert set(shadow["model_version"].to_list()) == {"2"}
        assert threads == ["shadow-scorer"]


def test_a_full_shadow_queue_drops_the_shadow_work_and_counts_it(tmp_path: Path) -> None:
    dropped = "churn_shadow_dropped_total"
    with in_process_runtime(tmp_path, 20, require_api_key=False, shadow_queue_size=1) as rt:
        rt.models["2"] = _candidate("2")
        RolloutStore(rt.settings).save(
            RolloutState(phase="shadow", stable_version="1", candidate_version="2")
        )
        release = threading.Event()
        score = rt.shadow._score
        rt.shadow._score = lambda work: (release.wait(10), score(work))
        before = prometheus_client.REGISTRY.get_sample_value(dropped) or 0.0
        answers = [_post(rt, [3])]  # its shadow work is taken by the thread, which waits
        for _ in range(1000):
            if rt.shadow._queue.qsize() == 0:
                break
            threading.Event().wait(0.01)
        answers += [_post(rt, [k]) for k in (4, 5, 6)]  # 1 queued, 2 dropped
        assert [a.status_code for a in answers] == [200] * 4  # the requests are not held up
        assert (prometheus_client.REGISTRY.get_sample_value(dropped) or 0.0) - before == 2
        release.set()
        assert rt.shadow.drain(10)
        rt.writer.flush()
        shadow = read_predictions(rt.settings).filter(pl.col("variant") == "shadow")
        assert sorted(shadow["customer_id"].to_list()) == [3, 4]


def test_a_version_loaded_in_the_background_is_warmed_up_and_frozen_before_it_takes_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model swapped in while the service runs joins the frozen long-lived objects (as the models
    loaded at start-up do) and has scored before it is installed: its one-row predictor exists and no
    collection runs once it serves."""
    from churn_assets.serving import bento_build

    model = _candidate("2")

    class Store:
        def get(self, tag: str) -> Any:  # what the BentoML model store returns: something with a path
            return type("Stored", (), {"path": tag})()

    monkeypatch.setattr(bento_build, "model_store", lambda settings: Store())
    monkeypatch.setattr(bento_build, "load_exported", lambda path: model)
    gc.unfreeze()
    try:
        with in_process_runtime(tmp_path, customers=10) as rt:
            rt.features_for([1, 2, 3])  # cached rows: the warm-up scores those
            seen: dict[str, Any] = {}
            install = rt.install

            def installing(m: ScoringModel) -> None:
                seen.update(frozen=gc.get_freeze_count(), ready=m._single is not None)
                install(m)

            monkeypatch.setattr(rt, "install", installing)
            monkeypatch.setattr(gc, "collect", lambda *a: pytest.fail("a full collection in a worker"))
            before = gc.get_freeze_count()
            rt._load_versions(["2"])
            assert "2" in rt.models
            assert seen == {"frozen": seen["frozen"], "ready": True} and seen["frozen"] > before
    finally:
        gc.unfreeze()
