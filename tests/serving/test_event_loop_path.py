"""``serving.inline_max_items``: a request of few, cached customers is worked on in the event loop and
answers and logs exactly as the thread pool does (in process: a real Runtime, SQLite online store,
LightGBM model, the app's endpoints)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx

from churn_assets.serving.app import build_app
from churn_assets.serving.prediction_log import read_predictions
from tests.serving_helpers import in_process_runtime


def test_cached_small_requests_run_in_the_event_loop_and_answer_and_log_as_in_a_thread(
    tmp_path: Path,
) -> None:
    with in_process_runtime(tmp_path, 20, require_api_key=False, inline_max_items=2) as rt:
        threads: list[str] = []
        score_rows = rt.score_rows

        def recorded(*args: Any, **kwargs: Any) -> Any:  # the real scoring, noting where it ran
            threads.append("loop" if threading.current_thread() is threading.main_thread() else "pool")
            return score_rows(*args, **kwargs)

        rt.score_rows = recorded  # type: ignore[method-assign]
        app = build_app(rt.settings, lambda: rt)

        async def calls() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                bodies = [[3, 4], [3, 4], [3, 4, 5], [99]]  # cold cache, cached, over the limit, unknown
                return [await client.post("/predict", json={"customer_ids": ids}) for ids in bodies]

        cold, cached, larger, unknown = asyncio.run(calls())
        assert threads == ["pool", "loop", "pool", "pool"]  # 99 was not cached before its request
        assert all(r.status_code == 200 for r in (cold, cached, larger, unknown))
        assert cached.json() == cold.json()  # same scores, labels, versions
        assert cached.headers["x-model-version"] == cold.headers["x-model-version"]
        assert "error" in unknown.json()["predictions"][0]
        rt.writer.flush()
        logged = read_predictions(rt.settings)
        assert logged.height == 2 + 2 + 3  # every scored item of every answer, once
        assert logged["request_id"].n_unique() == 3
