"""What the serving benchmarks share (``benchmarks.serving.run``, ``benchmarks.soak``).

* :func:`scratch_service`: a throw-away serving home — two small 45-feature LightGBM versions registered in
  MLflow (tests/serving_helpers), ``n_customers`` customers' features in Redis under a unique key prefix,
  the champion exported to the BentoML store and written to the bento's serving manifest — and the
  environment of a ``bentoml serve`` on it (Redis online store, Redis rate limit, ``workers`` workers).
  On exit the manifest is put back and every Redis key under the prefix deleted; the home folder (with the
  service logs and the prediction log) stays for inspection.
* :func:`deploy`: make another registered version (e.g. an ensemble, :func:`register_ensemble`) the one
  the next ``bentoml serve`` loads.
* :func:`start` / :func:`stop`: ``bentoml serve TARGET`` on a port, waited for until ready.
* :func:`open_loop`: an open-loop aiohttp client at a fixed rate; each request's latency is measured from
  its SCHEDULED send time, so time spent queueing (in the client or the server) counts.

Run from the repository root: it imports ``tests.serving_helpers`` and serves ``bento.service``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.tools import venv_tool
from churn_assets.feature_store.online import RedisOnlineStore
from churn_assets.serving.bento_build import bentoml_env, write_manifest
from churn_assets.serving.rollout import RolloutStore
from churn_assets.settings import Settings
from tests.serving_helpers import (
    AS_OF,
    ensemble_model,
    feature_frame,
    fill_online_store,
    register,
    register_models,
    remove_scratch_state,
    serving_settings,
)

REPO = Path(__file__).resolve().parents[2]
N_CUSTOMERS = 10_000
CHURN_SERVICE = "bento.service:ChurnService"
API_KEY = uuid.uuid4().hex  # the scratch service's serving.api_key; every client sends it as x-api-key


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ScratchService:
    """A throw-away serving home: ``settings`` point at it, ``env`` is the service's environment."""

    home: Path
    settings: Settings
    env: dict[str, str]
    champion: str


def register_ensemble(settings: Settings) -> str:
    """Register a calibrated ensemble (LightGBM + XGBoost + logistic regression, tests/serving_helpers) on the
    45 features as a new version; returns it (not deployed: :func:`deploy`)."""
    return register(
        settings, ensemble_model(feature_frame(range(1, 801), seed=4)), 0.45, 0.8, flavor="sklearn"
    )


def deploy(settings: Settings, version: str) -> None:
    """Make ``version`` the stable version, exported and in the bento's serving manifest."""
    write_manifest(settings, RolloutStore(settings).set_stable(version))


@contextlib.contextmanager
def scratch_service(
    redis_url: str, workers: int, n_customers: int = N_CUSTOMERS, label: str = "serving"
) -> Iterator[ScratchService]:
    """See the module docstring; ``label`` names the temporary home (``churnops-bench-LABEL-*``)."""
    home = Path(tempfile.mkdtemp(prefix=f"churnops-bench-{label}-"))
    prefix = f"churnops-bench:{uuid.uuid4().hex[:10]}"
    settings = serving_settings(home, redis_url=redis_url, redis_key_prefix=f"{prefix}:serving")
    store = RedisOnlineStore(redis_url, f"{prefix}:fs")
    try:
        _, champion = register_models(settings)
        fill_online_store(store, range(1, n_customers + 1))
        state = RolloutStore(settings).set_stable(champion)
        write_manifest(settings, state)
        env = {
            **bentoml_env(settings),
            "CHURNOPS_FEATURE_STORE__ONLINE_BACKEND": "redis",
            "CHURNOPS_FEATURE_STORE__REDIS_URL": redis_url,
            "CHURNOPS_FEATURE_STORE__REDIS_KEY_PREFIX": f"{prefix}:fs",
            "CHURNOPS_SERVING__REDIS_KEY_PREFIX": f"{prefix}:serving",
            "CHURNOPS_SERVING__AS_OF": AS_OF.date().isoformat(),
            "CHURNOPS_SERVING__WORKERS": str(workers),
            "CHURNOPS_SERVING__API_KEY": API_KEY,
        }
        yield ScratchService(home, settings, env, champion)
    finally:
        remove_scratch_state(store, redis_url, prefix)


def start(target: str, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """``bentoml serve target`` on ``port`` (output to ``log``), once ``/ready`` (``/readyz``) answers 200."""
    proc = subprocess.Popen(
        [str(venv_tool("bentoml")), "serve", target, "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    path = "/ready" if "ChurnService" in target else "/readyz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"not ready: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the service flushes its prediction log on shutdown), SIGKILL after 60 s."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass
class OpenLoopResult:
    """One entry per request, in send order: ``scheduled`` send time (seconds after the start),
    ``latency`` (seconds from the scheduled send time to the end of the response), HTTP ``status``
    (0 = no response: connection error or client timeout) and ``send_lag`` (seconds from the scheduled send
    time until the client's task for the request started: the client's own scheduling delay). Plus the
    client process's CPU seconds over the run (``client_cpu_seconds``) and the event loop it ran on."""

    rate: float
    scheduled: np.ndarray
    latency: np.ndarray
    status: np.ndarray
    elapsed: float
    send_lag: np.ndarray
    client_cpu_seconds: float
    loop: str

    @property
    def requests(self) -> int:
        return len(self.status)

    @property
    def ok(self) -> int:
        return int((self.status == 200).sum())


def event_loop_factory(loop: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The client's event loop: ``uvloop`` (a cheaper client; it comes with uvicorn's extras), ``asyncio``
    (the default loop: None) or ``auto`` (uvloop when installed)."""
    if loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if loop == "uvloop":
            raise
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run_open_loop(
    url: str, rate: float, seconds: float, ids: int, loop: str = "auto", **kwargs: Any
) -> OpenLoopResult:
    """:func:`open_loop` on its own event loop (:func:`event_loop_factory` of ``loop``)."""
    with asyncio.Runner(loop_factory=event_loop_factory(loop)) as runner:
        return runner.run(open_loop(url, rate, seconds, ids, **kwargs))


async def open_loop(
    url: str, rate: float, seconds: float, ids: int, seed: int = 0, timeout: float = 30.0
) -> OpenLoopResult:
    """POST ``{"customer_ids": [one random id in 1..ids]}`` to ``url`` at ``rate`` requests/s for ``seconds``.

    Open loop: request ``i`` is due at ``i / rate`` whatever the earlier ones are doing (at most 256
    connections; requests beyond that wait in the client, and that wait counts in their latency). The
    bodies are built before the clock starts; the sender wakes once per due request (or once for all that
    are due when it woke late), so a late wake-up shows in ``send_lag`` and in the latency.
    """
    import aiohttp

    n = int(rate * seconds)
    rng = random.Random(seed)
    bodies = [json.dumps({"customer_ids": [rng.randint(1, ids)]}).encode() for _ in range(n)]
    scheduled = np.arange(n) / rate
    latency = np.full(n, np.nan)
    send_lag = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int16)
    headers = {"content-type": "application/json", "x-api-key": API_KEY}
    connector = aiohttp.TCPConnector(limit=256)
    pending: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        cpu_start = time.process_time()
        start = time.perf_counter()

        async def one(i: int) -> None:
            due = start + scheduled[i]
            send_lag[i] = time.perf_counter() - due
            try:
                async with session.post(url, data=bodies[i], headers=headers) as r:
                    await r.read()
                    status[i] = r.status
            except (aiohttp.ClientError, TimeoutError):
                status[i] = 0
            latency[i] = time.perf_counter() - due

        for i in range(n):
            delay = start + scheduled[i] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    return OpenLoopResult(rate, scheduled, latency, status, elapsed, send_lag, cpu, type(loop).__module__)


def latency_ms(latency_seconds: np.ndarray) -> dict[str, float | None]:
    """P50 / P95 / P99 / P99.9 in ms of the answered requests (None when there are none)."""
    lat = latency_seconds[~np.isnan(latency_seconds)] * 1000
    keys = {"p50_ms": 50, "p95_ms": 95, "p99_ms": 99, "p999_ms": 99.9}
    if lat.size == 0:
        return dict.fromkeys(keys)
    return {k: round(float(np.percentile(lat, q)), 2) for k, q in keys.items()}


def fixed_rate(url: str, rate: int, seconds: int, ids: int) -> dict[str, Any]:
    """:func:`open_loop` summarised: achieved rate, latency percentiles, error rate (non-200 share)."""
    result = run_open_loop(url, rate, seconds, ids)
    return {
        "rate": rate,
        "seconds": seconds,
        "requests": result.requests,
        "achieved_rps": result.requests / result.elapsed,
        **latency_ms(result.latency),
        "error_rate": 1 - result.ok / result.requests if result.requests else 0.0,
    }
