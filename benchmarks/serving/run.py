"""Serving benchmark (loopback, bounded in time): the full churn service vs a bare BentoML service.

    make bench-tools                      # wrk, once (Debian: apt-get install wrk)
    .venv/bin/python -m benchmarks.serving.run [--rate-seconds 60] [--peak-seconds 15]

Run from the repository root (it imports ``tests.serving_helpers`` and serves ``bento.service``); needs
Redis at ``feature_store.redis_url`` (``make services``).

1. A throw-away home: two small 45-feature LightGBM versions registered in MLflow (tests/serving_helpers),
   10,000 customers' features in Redis (unique key prefix, removed at the end), the champion exported to the
   BentoML store.
2. Full service (``bentoml serve bento.service:ChurnService``, workers = ``--workers``): online features from
   Redis, routing, rate limit in Redis, prediction log. Two configurations: the default 1 h feature cache, and
   the cache off (every request reads Redis).
3. Bare service (``benchmarks/serving/bare_service.py``): the same LightGBM behind ``@bentoml.api``.
4. Peak throughput: ``wrk -t2 -c16`` with ``post.lua`` (one random customer id per request / one fixed row).
   Fixed rate: an open-loop aiohttp client at ``--rate`` requests/s for ``--rate-seconds`` (latency measured
   from the scheduled send time, so queueing counts).
The load average (``/proc/loadavg``) is recorded before every step: other jobs share this 2-core box.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.tools import WRK_HOW, require_redis, require_tool, venv_tool
from churn_assets.feature_store.online import RedisOnlineStore
from churn_assets.serving.bento_build import bentoml_env, write_manifest
from churn_assets.serving.rollout import RolloutStore
from churn_assets.settings import Settings
from tests.serving_helpers import (
    AS_OF,
    backup_manifest,
    fill_online_store,
    register_models,
    remove_scratch_state,
    serving_settings,
)

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = Settings().feature_store.redis_url
N_CUSTOMERS = 10_000
API_KEY = uuid.uuid4().hex  # the service started here needs it (serving.require_api_key)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(target: str, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
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
    raise RuntimeError(f"not ready: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def wrk(url: str, seconds: int, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c16",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(Path(__file__).with_name("post.lua")),
            url,
        ],
        env={**os.environ, "API_KEY": API_KEY, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float | None:
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return None
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(g) for g in errors.groups()) if errors else 0)
    return {"rps": rps, "p50_ms": ms("50%"), "p99_ms": ms("99%"), "requests": total, "errors": bad}


async def fixed_rate(url: str, rate: int, seconds: int, ids: int) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    n = rate * seconds
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()

        async def one(scheduled: float) -> None:
            nonlocal errors
            body = json.dumps({"customer_ids": [random.randint(1, ids)]}).encode()
            try:
                headers = {"content-type": "application/json", "x-api-key": API_KEY}
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - scheduled)

        tasks = []
        for i in range(n):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000
    return {
        "rate": rate,
        "seconds": seconds,
        "requests": n,
        "achieved_rps": n / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "error_rate": errors / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--rate-seconds", type=int, default=60)
    ap.add_argument("--peak-seconds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=REPO / ".churnops" / "bench" / "serving.json")
    args = ap.parse_args()
    require_tool("wrk", WRK_HOW)
    venv_tool("bentoml")
    require_redis(REDIS_URL)

    home = Path(tempfile.mkdtemp(prefix="churnops-bench-serving-"))
    prefix = f"churnops-bench:{uuid.uuid4().hex[:10]}"
    settings = serving_settings(home, redis_url=REDIS_URL, redis_key_prefix=f"{prefix}:serving")
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "workers": args.workers, "steps": {}}
    backup = backup_manifest()
    store = RedisOnlineStore(REDIS_URL, f"{prefix}:fs")
    try:
        _, champion = register_models(settings)
        fill_online_store(store, range(1, N_CUSTOMERS + 1))
        state = RolloutStore(settings).set_stable(champion)
        write_manifest(settings, state)
        env = {
            **bentoml_env(settings),
            "CHURNOPS_FEATURE_STORE__ONLINE_BACKEND": "redis",
            "CHURNOPS_FEATURE_STORE__REDIS_URL": REDIS_URL,
            "CHURNOPS_FEATURE_STORE__REDIS_KEY_PREFIX": f"{prefix}:fs",
            "CHURNOPS_SERVING__REDIS_KEY_PREFIX": f"{prefix}:serving",
            "CHURNOPS_SERVING__AS_OF": AS_OF.date().isoformat(),
            "CHURNOPS_SERVING__WORKERS": str(args.workers),
            "CHURNOPS_SERVING__API_KEY": API_KEY,
        }
        row = json.dumps({"row": [0.5] * 45})
        configs = [
            ("full_cache_1h", "bento.service:ChurnService", {}, "/predict", {"BODY_MODE": "ids"}),
            (
                "full_no_cache",
                "bento.service:ChurnService",
                {"CHURNOPS_SERVING__FEATURE_CACHE_TTL_SECONDS": "0"},
                "/predict",
                {"BODY_MODE": "ids"},
            ),
            (
                "bare_bentoml_api",
                "benchmarks.serving.bare_service:BareService",
                {},
                "/predict",
                {"BODY_MODE": "row", "ROW": row},
            ),
        ]
        for name, target, extra, path, wrk_env in configs:
            port = free_port()
            proc = start(target, {**env, **extra}, port, home / f"{name}.log")
            url = f"http://127.0.0.1:{port}{path}"
            try:
                step: dict[str, Any] = {"load_before": loadavg()}
                wrk(url, 3, {**wrk_env, "N_CUSTOMERS": str(N_CUSTOMERS)})  # warm-up
                step["peak"] = wrk(url, args.peak_seconds, {**wrk_env, "N_CUSTOMERS": str(N_CUSTOMERS)})
                if name == "full_cache_1h" and args.rate_seconds > 0:
                    step["load_before_rate"] = loadavg()
                    step["fixed_rate"] = asyncio.run(
                        fixed_rate(url, args.rate, args.rate_seconds, N_CUSTOMERS)
                    )
                step["load_after"] = loadavg()
                results["steps"][name] = step
                print(name, json.dumps(step), flush=True)
            finally:
                stop(proc)
        bare = results["steps"]["bare_bentoml_api"]["peak"]["rps"]
        for name in ("full_cache_1h", "full_no_cache"):
            results["steps"][name]["peak_vs_bare"] = results["steps"][name]["peak"]["rps"] / bare
    finally:
        remove_scratch_state(backup, store, REDIS_URL, prefix)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
