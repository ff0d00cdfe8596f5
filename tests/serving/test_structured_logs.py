"""The service's JSON log lines (``logging.format = json``, ``logging.request_lines``), parsed from the output
of a real served bento: one line per request with its request id (the prediction log's), the customer id
hashes (keyed, never the ids), model version, variant, latency and outcome."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from churn_assets.serving.prediction_log import read_predictions
from churn_assets.settings import LoggingSettings
from churn_assets.structured_logging import customer_id_hasher
from tests.serving.conftest import (
    BENTOML,
    REPO,
    Service,
    free_port,
    side_by_side_env,
    stop_service,
    wait_ready,
)

pytestmark = [pytest.mark.service, pytest.mark.timeout(180)]
HASH_KEY = "test-hash-key"


def _json_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.fixture(scope="module")
def json_logging_service(service: Service) -> Iterator[tuple[str, Path]]:
    """The service next to the session one, logging JSON lines with a line per request: (url, its log)."""
    port = free_port()
    log = service.settings.home / f"service-json-logs-{port}.log"
    env = {
        **service.env,
        **side_by_side_env(service, "json-logs"),
        "CHURNOPS_LOGGING__FORMAT": "json",
        "CHURNOPS_LOGGING__REQUEST_LINES": "true",
        "CHURNOPS_LOGGING__CUSTOMER_ID_HASH_KEY": HASH_KEY,
    }
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(BENTOML), "serve", "bento.service:ChurnService", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        yield url, log
    finally:
        stop_service(proc)


def test_a_served_request_writes_one_json_line_with_its_context(
    service: Service, json_logging_service: tuple[str, Path]
) -> None:
    url, log = json_logging_service
    ids = [11, 12, 999_999]
    with httpx.Client(base_url=url, timeout=10, headers={"x-api-key": service.api_key}) as client:
        ok = client.post("/predict", json={"customer_ids": ids})
        rejected = client.post("/predict", json={"customer_ids": ["x"]})
    assert ok.status_code == 200 and rejected.status_code == 422
    request_id = ok.headers["x-request-id"]

    deadline = time.monotonic() + 10
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = [line for line in _json_lines(log) if line.get("logger") == "churn_assets.serving.requests"]
        if len(lines) >= 2:
            break
        time.sleep(0.2)
    by_id = {line["request_id"]: line for line in lines}
    line = by_id[request_id]
    version = ok.json()["predictions"][0]["model_version"]
    hasher = customer_id_hasher(LoggingSettings(customer_id_hash_key=HASH_KEY))  # type: ignore[arg-type]
    assert line["event"] == "request" and line["level"] == "info"
    assert (line["endpoint"], line["status"], line["outcome"]) == ("predict", 200, "ok")
    assert (line["model_version"], line["variant"]) == (version, "champion")
    assert line["customers"] == 3
    assert line["customer_id_hashes"] == [hasher(c) for c in ids]
    assert not set(map(str, ids)) & set(line["customer_id_hashes"])  # hashes, never the ids
    assert line["latency_ms"] > 0
    assert line["timestamp"].endswith("Z")
    failed = [entry for entry in lines if entry["status"] == 422]
    assert failed and failed[0]["outcome"] == "rejected" and failed[0]["request_id"] != request_id

    # The line's request id is the prediction log's: the two can be joined.
    deadline = time.monotonic() + 10
    logged = pl.DataFrame()
    while time.monotonic() < deadline and logged.height < 2:
        logged = read_predictions(service.settings).filter(pl.col("request_id") == request_id)
        time.sleep(0.2)
    assert sorted(logged["customer_id"].to_list()) == [11, 12]


def test_the_service_start_up_is_a_json_line_too(json_logging_service: tuple[str, Path]) -> None:
    _, log = json_logging_service
    started = [line for line in _json_lines(log) if line.get("logger") == "churnops.serving"]
    assert any("loaded model versions" in line["event"] for line in started)
