"""A served request leaves (next to) no reference cycles behind. Under load every object left in a cycle
waits for the garbage collector, whose pass over them stops the worker, its event loop included: a
cancelled task per request (the old disconnect watcher) kept the whole request — Request, response,
deadline, task group, tracing span — in such a cycle, and cost 40-180 ms gen-0 pauses at 500 requests/s
(docs/serving.md, "Latency under load").

On a real runtime (a LightGBM model, the SQLite online store, the prediction-log writer in a temporary
home) behind the fast-path app, in a fresh interpreter as a service worker is, called as an ASGI server
calls it: ``receive`` hands over the body, then answers ``http.disconnect`` once the response is complete
(as uvicorn's does)."""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
from collections import Counter
from pathlib import Path
from typing import Any

from churn_assets.serving.app import build_app
from churn_assets.serving.prediction_log import read_predictions
from tests.serving_helpers import in_process_runtime

REQUESTS = 200
# LightGBM's ctypes call leaves a pointer and its dict per prediction (numpy's ``ndarray.ctypes.data_as``);
# the cancelled disconnect watcher left ~45 objects per request here (~120 inside BentoML).
MAX_CYCLIC_PER_REQUEST = 5


async def post(app: Any, path: str, payload: object) -> int:
    """One ASGI HTTP request; returns the response status."""
    body = json.dumps(payload).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 3000),
    }
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    complete = asyncio.Event()
    status = 0

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await complete.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            complete.set()

    await app(scope, receive, send)
    return status


def count_cyclic_garbage(home: str) -> dict[str, Any]:
    """Serve REQUESTS requests after a warm-up, with the collector off; what the collector then finds."""
    with in_process_runtime(Path(home), 20, require_api_key=False) as runtime:
        app = build_app(runtime.settings, lambda: runtime)

        async def serve() -> list[int]:
            codes = [await post(app, "/predict", {"customer_ids": [1 + i % 20]}) for i in range(REQUESTS)]
            # The detached disconnect watchers see their responses complete and end; waited for, not
            # slept on: one still pending when asyncio.run returns is cancelled, and a cancelled task is
            # the very cycle this test looks for.
            watchers = asyncio.all_tasks() - {asyncio.current_task()}
            if watchers:
                await asyncio.wait(watchers, timeout=30)
            return codes

        asyncio.run(serve())  # warm-up: feature cache, metric children, lazy imports
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage, to name it
        try:
            codes = asyncio.run(serve())
            cyclic = gc.collect()  # objects that only the collector could free
            kinds = Counter(type(o).__qualname__ for o in gc.garbage).most_common(8)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        runtime.writer.flush()
        logged = read_predictions(runtime.settings).height
    return {"codes": codes, "cyclic": cyclic, "kinds": kinds, "logged": logged}


def _in_child(home: str, results: Any) -> None:
    results.put(count_cyclic_garbage(home))


def test_served_requests_leave_almost_no_cyclic_garbage(tmp_path: Path) -> None:
    # In a fresh interpreter, as a service worker is: what other tests left in this process (imports,
    # handlers, caches) is not the request path's garbage.
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    child = spawn.Process(target=_in_child, args=(str(tmp_path), results))
    child.start()
    try:
        measured = results.get(timeout=240)
    finally:
        child.join(60)
    assert measured["codes"] == [200] * REQUESTS
    assert measured["logged"] == 2 * REQUESTS  # every request answered and logged
    cyclic = measured["cyclic"]
    assert cyclic <= MAX_CYCLIC_PER_REQUEST * REQUESTS, (
        f"{cyclic / REQUESTS:.1f} cyclic objects per request; most common: {measured['kinds']}"
    )
