"""The API key defaults, on real services started without ``serving.api_key``: ``churnops serve`` generates
and prints a key that the service then requires; with ``require_api_key=false`` predictions are public,
the admin endpoint is disabled, and the OpenAPI document says so."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import (
    BENTOML,
    CHURNOPS,
    REPO,
    Service,
    free_port,
    side_by_side_env,
    stop_service,
    wait_ready,
)

pytestmark = [pytest.mark.service, pytest.mark.timeout(180)]


def _env_without_key(service: Service, name: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in service.env.items() if k != "CHURNOPS_SERVING__API_KEY"}
    return {**env, **side_by_side_env(service, name), **extra}


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def generated_key_service(service: Service) -> Iterator[tuple[str, str]]:
    """``churnops serve`` with no key configured: (url, the key it printed)."""
    port = free_port()
    log = service.settings.home / f"churnops-serve-nokey-{port}.log"
    proc = _start(
        [str(CHURNOPS), "serve", "--port", str(port)], _env_without_key(service, "generated-key"), log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        match = re.search(r"x-api-key: (\S+)\)", log.read_text())
        assert match, log.read_text()[-2000:]
        yield url, match.group(1)
    finally:
        stop_service(proc)


@pytest.fixture(scope="module")
def public_service(service: Service) -> Iterator[str]:
    """``bentoml serve`` with no key and ``serving.require_api_key=false``."""
    port = free_port()
    log = service.settings.home / f"service-public-{port}.log"
    env = _env_without_key(service, "public", CHURNOPS_SERVING__REQUIRE_API_KEY="false")
    proc = _start([str(BENTOML), "serve", "bento.service:ChurnService", "--port", str(port)], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        yield url
    finally:
        stop_service(proc)


def test_churnops_serve_without_a_key_generates_one_and_requires_it(
    generated_key_service: tuple[str, str],
) -> None:
    url, key = generated_key_service
    assert len(key) >= 32
    with httpx.Client(base_url=url, timeout=10) as bare:
        missing = bare.post("/predict", json={"customer_ids": [3]})
        wrong = bare.post("/predict", json={"customer_ids": [3]}, headers={"x-api-key": key[:-1]})
        right = bare.post("/predict", json={"customer_ids": [3]}, headers={"x-api-key": key})
        rollout_missing = bare.get("/rollout")
        rollout = bare.get("/rollout", headers={"x-api-key": key})
        spec = bare.get("/openapi.json").json()
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200), right.text
    assert missing.headers["www-authenticate"] == 'ApiKey header="x-api-key"'
    assert missing.json() == {"error": "missing or wrong x-api-key header"}
    assert (rollout_missing.status_code, rollout.status_code) == (401, 200)
    for path, method in [("/predict", "post"), ("/predict_features", "post"), ("/rollout", "get")]:
        assert spec["paths"][path][method]["security"] == [{"ApiKey": []}, {"BearerKey": []}]
        assert "401" in spec["paths"][path][method]["responses"]


def test_public_predictions_disable_the_admin_endpoint_and_the_document_says_so(public_service: str) -> None:
    with httpx.Client(base_url=public_service, timeout=10) as bare:
        predict = bare.post("/predict", json={"customer_ids": [3]})
        any_key = bare.post("/predict", json={"customer_ids": [3]}, headers={"x-api-key": "anything"})
        rollout = bare.get("/rollout")
        rollout_key = bare.get("/rollout", headers={"x-api-key": "anything"})
        spec = bare.get("/openapi.json").json()
        merged = bare.get("/docs.json").json()
    assert (predict.status_code, any_key.status_code) == (200, 200), predict.text
    assert (rollout.status_code, rollout_key.status_code) == (403, 403)
    assert rollout.json() == {"error": "admin endpoint disabled: serving.api_key is not set"}
    for doc in (spec, merged):
        for path in ("/predict", "/predict_features"):
            assert doc["paths"][path]["post"]["security"] == []
            assert "401" not in doc["paths"][path]["post"]["responses"]
        assert doc["paths"]["/rollout"]["get"]["security"] == [{"ApiKey": []}, {"BearerKey": []}]
        assert "403" in doc["paths"]["/rollout"]["get"]["responses"]


def test_a_key_is_never_accepted_by_a_service_without_one_when_predictions_need_it(service: Service) -> None:
    """Raw ``bentoml serve`` with no key and the default ``require_api_key``: nothing is open."""
    port = free_port()
    log = service.settings.home / f"service-nokey-{port}.log"
    args = [str(BENTOML), "serve", "bento.service:ChurnService", "--port", str(port)]
    proc = _start(args, _env_without_key(service, "no-key"), log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        with httpx.Client(base_url=url, timeout=10) as bare:
            codes = [
                bare.post("/predict", json={"customer_ids": [3]}).status_code,
                bare.post("/predict", json={"customer_ids": [3]}, headers={"x-api-key": ""}).status_code,
                bare.get("/rollout").status_code,
            ]
            message = bare.post("/predict", json={"customer_ids": [3]}).json()["error"]
        time.sleep(0.2)
    finally:
        stop_service(proc)
    assert codes == [401, 401, 403]
    assert "serving.api_key is not set" in message
    assert "serving.api_key is not set" in log.read_text()  # the startup warning
