"""Two churn services started from the same BentoML home keep their own metrics: BentoML empties its
shared Prometheus multiprocess folder whenever a server starts, so without a folder per server
(``serving.http_metrics.own_multiprocess_dir``) the second start wipes the first service's counts."""

from __future__ import annotations

import httpx
import pytest

from churn_assets.serving.service_metrics import parse
from tests.serving.conftest import Service, free_port, start_service, stop_service, wait_ready

pytestmark = [pytest.mark.service, pytest.mark.timeout(180)]


def _predict_count(url: str) -> float:
    return sum(parse(httpx.get(f"{url}/metrics", timeout=5).text).counts.values())


def test_a_second_service_from_the_same_home_leaves_the_first_ones_metrics(service: Service) -> None:
    with service.client() as client:
        for i in range(5):
            assert client.post("/predict", json={"customer_ids": [1 + i]}).status_code == 200
    before = _predict_count(service.url)
    assert before >= 5
    root = service.settings.bentoml_home / "prometheus_multiproc"
    folders = {p.name for p in root.iterdir()} if root.exists() else set()
    port = free_port()
    second = start_service(service.settings, service.env, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", second, service.settings.home / f"service-{port}.log")
        assert _predict_count(service.url) >= before  # nothing wiped
        mine = {p.name for p in root.iterdir()}
        assert len(mine - folders) == 1, (folders, mine)  # the second server's own folder
        with service.client() as client:
            for i in range(5):
                assert client.post("/predict", json={"customer_ids": [1 + i]}).status_code == 200
        assert _predict_count(service.url) - before == pytest.approx(5)
        assert _predict_count(f"http://127.0.0.1:{port}") == 0  # and the second counts its own
    finally:
        stop_service(second)
