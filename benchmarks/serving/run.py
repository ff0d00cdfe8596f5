"""Serving benchmark (loopback, bounded in time): the full churn service vs a bare BentoML service.

    make bench-tools                      # wrk, once (Debian: apt-get install wrk)
    .venv/bin/python -m benchmarks.serving.run [--rate-seconds 60] [--peak-seconds 15]

Run from the repository root (it imports ``tests.serving_helpers`` and serves ``bento.service``); needs
Redis at ``feature_store.redis_url`` (``make services``).

1. A throw-away home (``benchmarks.serving.harness.scratch_service``): two small 45-feature LightGBM versions
   registered in MLflow, 10,000 customers' features in Redis (unique key prefix, removed at the end), the
   champion exported to the BentoML store.
2. Full service (``bentoml serve bento.service:ChurnService``, workers = ``--workers``): online features from
   Redis, routing, rate limit in Redis, prediction log. Two configurations: the default 1 h feature cache, and
   the cache off (every request reads Redis).
   A third configuration (``full_ensemble``, default cache) serves an ENSEMBLE champion instead — LightGBM,
   XGBoost and logistic regression scored one after the other per request, blended and calibrated — the
   multi-model figures beside the single-LightGBM ones.
3. Bare service (``benchmarks/serving/bare_service.py``): the same LightGBM behind ``@bentoml.api``.
4. Peak throughput: ``wrk -t2 -c16`` with ``post.lua`` (one random customer id per request / one fixed row).
   Fixed rate: the open-loop aiohttp client of ``benchmarks.serving.harness`` at ``--rate`` requests/s for
   ``--rate-seconds`` (latency measured from the scheduled send time, so queueing counts).
The load average (``/proc/loadavg``) is recorded before every step: other jobs share this 2-core box.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.serving.harness import (
    API_KEY,
    CHURN_SERVICE,
    N_CUSTOMERS,
    REPO,
    deploy,
    fixed_rate,
    free_port,
    loadavg,
    register_ensemble,
    scratch_service,
    start,
    stop,
)
from benchmarks.tools import WRK_HOW, require_redis, require_tool, venv_tool
from churn_assets.settings import Settings


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--rate-seconds", type=int, default=60)
    ap.add_argument("--peak-seconds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=REPO / ".churnops" / "bench" / "serving.json")
    ap.add_argument(
        "--only",
        nargs="+",
        help="Run only these steps (full_cache_1h full_no_cache full_ensemble bare_bentoml_api).",
    )
    args = ap.parse_args()
    require_tool("wrk", WRK_HOW)
    venv_tool("bentoml")
    redis_url = Settings().feature_store.redis_url.get_secret_value()
    require_redis(redis_url)

    results: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "workers": args.workers, "steps": {}}
    with scratch_service(redis_url, args.workers) as scratch:
        row = json.dumps({"row": [0.5] * 45})
        configs = [
            ("full_cache_1h", CHURN_SERVICE, {}, "/predict", {"BODY_MODE": "ids"}),
            (
                "full_no_cache",
                CHURN_SERVICE,
                {"CHURNOPS_SERVING__FEATURE_CACHE_TTL_SECONDS": "0"},
                "/predict",
                {"BODY_MODE": "ids"},
            ),
            ("full_ensemble", CHURN_SERVICE, {}, "/predict", {"BODY_MODE": "ids"}),
            (
                "bare_bentoml_api",
                "benchmarks.serving.bare_service:BareService",
                {},
                "/predict",
                {"BODY_MODE": "row", "ROW": row},
            ),
        ]
        ensemble = register_ensemble(scratch.settings)
        for name, target, extra, path, wrk_env in configs:
            if args.only and name not in args.only:
                continue
            deploy(scratch.settings, ensemble if name == "full_ensemble" else scratch.champion)
            port = free_port()
            proc = start(target, {**scratch.env, **extra}, port, scratch.home / f"{name}.log")
            url = f"http://127.0.0.1:{port}{path}"
            try:
                step: dict[str, Any] = {"load_before": loadavg()}
                wrk(url, 3, {**wrk_env, "N_CUSTOMERS": str(N_CUSTOMERS)})  # warm-up
                step["peak"] = wrk(url, args.peak_seconds, {**wrk_env, "N_CUSTOMERS": str(N_CUSTOMERS)})
                if name in ("full_cache_1h", "full_ensemble") and args.rate_seconds > 0:
                    step["load_before_rate"] = loadavg()
                    step["fixed_rate"] = fixed_rate(url, args.rate, args.rate_seconds, N_CUSTOMERS)
                step["load_after"] = loadavg()
                results["steps"][name] = step
                print(name, json.dumps(step), flush=True)
            finally:
                stop(proc)
        steps = results["steps"]
        if "bare_bentoml_api" in steps:
            bare = steps["bare_bentoml_api"]["peak"]["rps"]
            for name in ("full_cache_1h", "full_no_cache", "full_ensemble"):
                if name in steps:
                    steps[name]["peak_vs_bare"] = steps[name]["peak"]["rps"] / bare
        if "full_ensemble" in steps and "full_cache_1h" in steps:
            steps["full_ensemble"]["peak_vs_single"] = (
                steps["full_ensemble"]["peak"]["rps"] / steps["full_cache_1h"]["peak"]["rps"]
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
