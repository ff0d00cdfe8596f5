"""Every Grafana panel's query returns data from a real Prometheus that scraped the running service.

The Debian ``prometheus`` binary (``make services`` installs it) runs on a free loopback port with a
temporary storage folder and deploy/prometheus/prometheus.yml, its scrape interval shortened to 1 s and its
targets pointed at the ``service`` fixture's churn service and at ``churnops metrics serve`` over a
warehouse holding real monitoring results (tests/quality_helpers.py). A bounded burst of requests (in a
canary phase, so both variants serve; a few malformed and oversized ones, so error series exist) gives
the serving series; then each ``expr`` of deploy/grafana/dashboards/churnops.json is sent to Prometheus'
HTTP API with Grafana's ``$__rate_interval`` set to 1m, and must return at least one finite value. The
loaded alert rules must all evaluate without error.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import yaml

from churn_assets.serving.rollout import RolloutStore
from tests.quality_helpers import store_quality_history
from tests.serving.conftest import CHURNOPS, N_CUSTOMERS, REPO, Service, free_port

pytestmark = [pytest.mark.service, pytest.mark.timeout(180)]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DEPLOY = REPO / "deploy"
RATE_INTERVAL = "1m"
REQUESTS = 240  # predict calls of the burst (batches of 1-5 customers)
WAIT = 30.0  # seconds a target / query may take to show data


def _get(url: str, **params: str) -> dict[str, Any]:
    r = httpx.get(url, params=params, timeout=5)
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


def _until(what: str, check: Any, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what} after {timeout} s (last answer: {last!r})")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:  # pragma: no cover
        process.kill()
        process.wait()


@pytest.fixture
def exporter(tmp_path: Path, service: Service) -> Iterator[str]:
    """``churnops metrics serve`` on a free port, over gauges written from a warehouse's monitoring history."""
    from churn_assets.monitoring.prometheus import write_quality_metrics
    from churn_assets.settings import Settings

    home = tmp_path / "monitoring-home"
    settings = Settings(home=home)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        store_quality_history(con)
        assert write_quality_metrics(settings, con) is not None
    port = free_port()
    env = {**service.env, "CHURNOPS_HOME": str(home)}
    log = open(tmp_path / "exporter.log", "ab")  # noqa: SIM115 - child's output
    process = subprocess.Popen(
        [str(CHURNOPS), "metrics", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"exporter exited: {(tmp_path / 'exporter.log').read_text()[-2000:]}")
        try:
            return "churn_model_auc" in httpx.get(url, timeout=2).text
        except httpx.HTTPError:
            return False

    try:
        _until("the exporter serves the gauges", up)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(process)


@pytest.fixture
def prometheus(tmp_path: Path, service: Service, exporter: str) -> Iterator[str]:
    """Prometheus scraping the service and the exporter every second; its API base URL."""
    if not Path(PROMETHEUS).exists():
        pytest.fail(
            f"{PROMETHEUS} is missing: `make services` installs Debian's prometheus package (apt-get)"
        )
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules.yml")]
    targets = {"churn-service": service.url.removeprefix("http://"), "churn-monitoring": exporter}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "ab")  # noqa: SIM115 - child's output
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            "--storage.tsdb.retention.time=1h",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api/v1"

    def both_up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
        try:
            result = _get(f"{api}/query", query="up")["data"]["result"]
        except httpx.HTTPError:
            return False
        return {r["metric"]["job"] for r in result if r["value"][1] == "1"} == set(targets)

    try:
        _until("both targets up in Prometheus", both_up)
        yield api
    finally:
        _stop(process)


def _burst(service: Service) -> None:
    """REQUESTS predict calls over a few seconds, plus error answers (422 malformed, 413 oversized)."""
    with service.client() as client:
        for i in range(REQUESTS):
            ids = [1 + (i * 7 + k) % N_CUSTOMERS for k in range(1 + i % 5)]
            assert client.post("/predict", json={"customer_ids": ids}).status_code == 200
            if i % 40 == 0:
                assert client.post("/predict", json={"customer_ids": "all"}).status_code == 422
                too_many = list(range(1, service.settings.serving.max_batch_size + 100))
                assert client.post("/predict", json={"customer_ids": too_many}).status_code == 413
            time.sleep(0.02)


@contextlib.contextmanager
def _trickle(service: Service, every: float = 0.25) -> Iterator[None]:
    """One /predict every ``every`` seconds (at most 4 per second) until the block ends."""
    stop = threading.Event()

    def send() -> None:
        with service.client() as client:
            i = 0
            while not stop.wait(every):
                i += 1
                client.post("/predict", json={"customer_ids": [1 + i % N_CUSTOMERS]})

    thread = threading.Thread(target=send, name="trickle", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "churnops.json").read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def test_every_dashboard_query_returns_data_from_the_scraped_service(
    service: Service, prometheus: str
) -> None:
    store = RolloutStore(service.settings)
    before = store.load()
    state = store.load()
    state.phase = "canary_50"  # both variants serve, so the rollout-share panel has two series
    store.save(state)
    try:
        time.sleep(service.settings.serving.rollout_refresh_seconds + 0.2)
        _burst(service)
        # A trickle of requests while the panels are queried, as a live dashboard sees: the rate windows
        # never run dry, however long a slow box takes to go through the panels.
        with _trickle(service):
            queries = _dashboard_queries()
            assert len(queries) >= 12
            for title, expr in queries:
                query = expr.replace("$__rate_interval", RATE_INTERVAL)

                def finite(query: str = query) -> list[dict[str, Any]]:
                    result: list[dict[str, Any]] = _get(f"{prometheus}/query", query=query)["data"]["result"]
                    return [r for r in result if math.isfinite(float(r["value"][1]))]

                _until(f"panel {title!r}: a finite value for {query}", finite)
            share = _get(
                f"{prometheus}/query",
                query=f"sum by (variant) (rate(churn_predictions_total[{RATE_INTERVAL}]))",
            )
            assert {"champion", "canary"} <= {r["metric"]["variant"] for r in share["data"]["result"]}
    finally:
        store.save(before)

    def rules() -> list[dict[str, Any]]:
        return [r for g in _get(f"{prometheus}/rules")["data"]["groups"] for r in g["rules"]]

    assert {r["name"] for r in rules()} == set(_alert_names())
    _until("every rule evaluated", lambda: all(r["health"] != "unknown" for r in rules()))
    failing = [(r["name"], r.get("lastError")) for r in rules() if r["health"] != "ok"]
    assert not failing, failing


def _alert_names() -> list[str]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"]
    return [r["alert"] for g in groups for r in g["rules"]]
