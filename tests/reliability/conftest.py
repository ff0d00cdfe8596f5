"""A real churn service (``bentoml serve`` from source, 2 workers) whose every Redis — online features, rate
limit, rollout state — is a ``redis-server`` this module starts on a free port, so a test can stop it and
freeze it (``SIGSTOP``) without touching the shared Redis other tests use."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from churn_assets.feature_store.online import RedisOnlineStore
from churn_assets.serving.bento_build import write_manifest
from churn_assets.serving.rollout import RolloutStore
from churn_assets.settings import Settings
from tests.reliability.load import API_KEY
from tests.serving.conftest import N_CUSTOMERS, free_port, start_service, stop_service, wait_ready
from tests.serving_helpers import (
    AS_OF,
    fill_online_store,
    register_models,
    remove_scratch_state,
    serving_settings,
)


class RedisServer:
    """An own ``redis-server`` (no automatic persistence) in ``directory``. ``stop`` saves the data to the
    directory's RDB file first, so ``start`` brings the same data back, as a restarted production Redis with
    persistence would."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False

    def start(self) -> None:
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - the child's output
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *(
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    "--dbfilename",
                    "dump.rdb",
                ),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping()
                return
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {self.port} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        assert self.process is not None
        redis.Redis.from_url(self.url).save()
        self.process.kill()
        self.process.wait()
        self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)
        self.frozen = False

    def close(self) -> None:
        if self.process is not None:
            if self.frozen:
                self.thaw()
            self.process.kill()
            self.process.wait()
            self.process = None


@dataclass
class Deployment:
    """The running service and what a test needs to drive it and check its prediction log."""

    url: str
    redis: RedisServer
    settings: Settings  # with the service's prediction_log_dir
    process: subprocess.Popen[bytes]
    log_path: Path
    feature_row: dict[str, object] = field(default_factory=dict)

    def log_text(self, start: int = 0) -> str:
        return self.log_path.read_bytes()[start:].decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("reliability")
    (home / "redis").mkdir()
    server = RedisServer(home / "redis")
    server.start()
    prefix = f"churnops-test:{uuid.uuid4().hex[:12]}"
    settings = serving_settings(
        home, redis_url=server.url, redis_key_prefix=f"{prefix}:serving", rollout_backend="redis"
    )
    store = RedisOnlineStore(server.url, f"{prefix}:fs")
    process: subprocess.Popen[bytes] | None = None
    try:
        _, champion = register_models(settings)
        fill_online_store(store, range(1, N_CUSTOMERS + 1))
        state = RolloutStore(settings).set_stable(champion)  # one model, no rollout: no shadow rows
        write_manifest(settings, state)
        feature_row = store.read([351], now=AS_OF).customers[0].values
        env = {
            "CHURNOPS_HOME": str(home),
            "CHURNOPS_FEATURE_STORE__ONLINE_BACKEND": "redis",
            "CHURNOPS_FEATURE_STORE__REDIS_URL": server.url,
            "CHURNOPS_FEATURE_STORE__REDIS_KEY_PREFIX": f"{prefix}:fs",
            "CHURNOPS_SERVING__REDIS_URL": server.url,
            "CHURNOPS_SERVING__REDIS_KEY_PREFIX": f"{prefix}:serving",
            "CHURNOPS_SERVING__ROLLOUT_BACKEND": "redis",
            "CHURNOPS_SERVING__AS_OF": AS_OF.date().isoformat(),
            "CHURNOPS_SERVING__WORKERS": "2",
            "CHURNOPS_SERVING__API_KEY": API_KEY,
            "CHURNOPS_SERVING__FEATURE_CACHE_TTL_SECONDS": "0",  # every /predict reads the store
            "CHURNOPS_SERVING__PREDICTION_LOG_FLUSH_SECONDS": "0.5",
        }
        port = free_port()
        process = start_service(settings, env, port)
        log_path = home / f"service-{port}.log"
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, log_path)
        # Both workers up: /ready answered by each (the port is shared; a few tries reach both).
        for _ in range(20):
            httpx.get(f"{url}/ready", timeout=5)
        yield Deployment(url, server, settings, process, log_path, {"customer_id": 351, **feature_row})
    finally:
        if process is not None:
            stop_service(process)
        if server.process is None:
            server.start()
        if server.frozen:
            server.thaw()
        remove_scratch_state(store, server.url, prefix)
        server.close()
        os.environ.pop("BENTOML_HOME", None)
