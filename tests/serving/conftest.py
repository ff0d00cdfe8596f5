"""A real churn service (``bentoml serve`` from source) on a free port, with the real Redis behind a proxy."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from churn_assets.feature_store.online import RedisOnlineStore
from churn_assets.serving.bento_build import bentoml_env, sync_rollout, write_manifest
from churn_assets.serving.rollout import RolloutStore
from churn_assets.settings import Settings
from tests.serving_helpers import (
    TcpProxy,
    fill_online_store,
    proxied_redis_url,
    redis_port,
    register_models,
    remove_scratch_state,
    serving_settings,
)

REPO = Path(__file__).resolve().parents[2]
# Console scripts of the interpreter running the tests (its venv may live anywhere, not only REPO/.venv).
BIN = Path(sys.executable).parent
BENTOML = BIN / "bentoml"
CHURNOPS = BIN / "churnops"
N_CUSTOMERS = 600
HEADER_TIMEOUT = 2.0
MAX_BATCH_SIZE = 100
KEEP_ALIVE_TIMEOUT = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    url: str
    settings: Settings
    proxy: TcpProxy
    previous: str
    champion: str
    prefix: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    api_key: str

    def client(self) -> httpx.Client:
        """A client sending the service's API key (``serving.api_key`` is set in this service)."""
        return httpx.Client(base_url=self.url, timeout=10, headers={"x-api-key": self.api_key})


def start_service(settings: Settings, env_overrides: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    env = {**bentoml_env(settings), **env_overrides}
    log = open(settings.home / f"service-{port}.log", "ab")  # noqa: SIM115 - child's stdout
    return subprocess.Popen(
        [str(BENTOML), "serve", "bento.service:ChurnService", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited {process.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"service not ready in {timeout} s: {log.read_text()[-3000:]}")


def stop_service(process: subprocess.Popen[bytes]) -> None:
    process.terminate()  # SIGTERM: graceful shutdown, flushes the prediction log
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover
        process.kill()
        process.wait()


def side_by_side_env(service: Service, name: str) -> dict[str, str]:
    """Environment overrides for another service next to ``service``: the same state (models, registry,
    rollout, prediction log: symlinks into its home), but its own BentoML home. ``bentoml serve`` empties
    ``$BENTOML_HOME/prometheus_multiproc_dir`` when it starts, which would wipe ``service``'s metrics."""
    home = service.settings.home.parent / f"{service.settings.home.name}-{name}"
    bentoml_home = home / "bentoml"
    if not home.exists():
        bentoml_home.mkdir(parents=True)
        for entry in service.settings.home.iterdir():
            if entry.name != "bentoml" and entry.is_dir():
                (home / entry.name).symlink_to(entry)
        for entry in service.settings.bentoml_home.iterdir():
            if entry.name not in ("prometheus_multiproc_dir", "tmp"):
                (bentoml_home / entry.name).symlink_to(entry)
    return {"CHURNOPS_HOME": str(home), "BENTOML_HOME": str(bentoml_home)}


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("service")
    prefix = f"churnops-test:{uuid.uuid4().hex[:12]}"
    proxy = TcpProxy(redis_port(redis_url))
    proxy.start()
    api_key = uuid.uuid4().hex
    overrides = {
        "CHURNOPS_HOME": str(home),
        "CHURNOPS_FEATURE_STORE__ONLINE_BACKEND": "redis",
        "CHURNOPS_FEATURE_STORE__REDIS_URL": proxied_redis_url(redis_url, proxy),
        "CHURNOPS_FEATURE_STORE__REDIS_KEY_PREFIX": f"{prefix}:fs",
        "CHURNOPS_SERVING__REDIS_URL": redis_url,
        "CHURNOPS_SERVING__REDIS_KEY_PREFIX": f"{prefix}:serving",
        "CHURNOPS_SERVING__AS_OF": "2025-06-02",
        "CHURNOPS_SERVING__BREAKER_MIN_CALLS": "5",
        "CHURNOPS_SERVING__BREAKER_RESET_SECONDS": "2",
        "CHURNOPS_SERVING__MAX_BATCH_SIZE": str(MAX_BATCH_SIZE),
        "CHURNOPS_SERVING__PREDICTION_LOG_FLUSH_SECONDS": "0.5",
        "CHURNOPS_SERVING__API_KEY": api_key,
        # Short connection timeouts, so the tests of slow clients take seconds (defaults: 10 s and 5 s).
        "CHURNOPS_SERVING__HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "CHURNOPS_SERVING__KEEP_ALIVE_TIMEOUT_SECONDS": str(KEEP_ALIVE_TIMEOUT),
    }
    settings = serving_settings(home, redis_key_prefix=f"{prefix}:serving", redis_url=redis_url)
    previous, champion = register_models(settings)
    store = RedisOnlineStore(redis_url, f"{prefix}:fs")
    fill_online_store(store, range(1, N_CUSTOMERS + 1))
    # Deployed v1, then the registry promoted v2: the bento serves v1 stable + v2 candidate (shadow).
    RolloutStore(settings).set_stable(previous)
    state = sync_rollout(settings)
    assert (state.phase, state.candidate_version) == ("shadow", champion)
    write_manifest(settings, state)
    port = free_port()
    process = start_service(settings, overrides, port)
    url = f"http://127.0.0.1:{port}"
    svc = Service(
        url,
        settings,
        proxy,
        previous,
        champion,
        prefix,
        process,
        {**bentoml_env(settings), **overrides},
        api_key,
    )
    try:
        wait_ready(url, process, home / f"service-{port}.log")
        yield svc
    finally:
        stop_service(svc.process)  # the current one (a test may restart the service)
        remove_scratch_state(store, redis_url, prefix)
        os.environ.pop("BENTOML_HOME", None)
