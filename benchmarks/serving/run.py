"""Serving benchmark (loopback, bounded in time): the full churn service vs a bare BentoML service.

    make bench-tools                      # wrk, once (Debian: apt-get install wrk)
    .venv/bin/python -m benchmarks.serving.run [--rounds 2] [--rate-seconds 60] [--peak-seconds 15]
        [--only bare_bentoml_api full_cache_1h ...] [--max-load 2.0] [--settle-max-seconds 120]

Run from the repository root (it imports ``tests.serving_helpers`` and serves ``bento.service``); needs
Redis at ``feature_store.redis_url`` (``make services``).

1. A throw-away home (``benchmarks.serving.harness.scratch_service``): two small 45-feature LightGBM versions
   registered in MLflow, 10,000 customers' features in Redis (unique key prefix, removed at the end), the
   champion exported to the BentoML store.
2. Steps (``--only`` runs a selection):

   * ``bare_bentoml_api``: the bare service (``benchmarks/serving/bare_service.py``), the same LightGBM behind
     ``@bentoml.api``, the feature row in the body;
   * ``full_cache_1h``: the full service (``bentoml serve bento.service:ChurnService``): online features
     from Redis behind the default 1 h feature cache, routing, API key, rate limit in Redis, prediction log;
   * ``full_no_cache``: the same with the cache off (every request reads Redis);
   * ``full_rate``: the full service (1 h cache) at a fixed ``--rate`` requests/s for ``--rate-seconds``
     (the open-loop aiohttp client of ``benchmarks.serving.harness``; latency measured from the scheduled
     send time, so queueing counts);
   * ``full_ensemble``: an ENSEMBLE champion (LightGBM, XGBoost and logistic regression scored one after
     the other per request, blended and calibrated), peak and fixed rate.

   Every service runs ``--workers`` workers. The bare and full services (with and without cache) are all
   started first and stay up, warmed with ``wrk`` for ``--warmup-seconds`` each; then their peaks are
   measured in ``--rounds`` rounds, alternating (bare, full, no cache, bare, full, no cache, ...), so a
   change in the box's load hits each of them alike. Each is reported per round, with its best and median
   peak; ``peak_vs_bare`` compares medians (and bests) of the same run.
3. Peak throughput: ``wrk -t2 -c16`` for ``--peak-seconds`` with ``post.lua`` (one random customer id per
   request / one fixed row).

Other jobs share the box: before every measured step the run waits until the 1-min load average
(``/proc/loadavg``) is at most ``--max-load``, at least ``--cooldown-seconds`` and at most
``--settle-max-seconds`` (then it goes on, and the step records ``settled: false``). Each step records the
load it started at, how long it waited, and the load after it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import time
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


STEPS = ("bare_bentoml_api", "full_cache_1h", "full_no_cache", "full_rate", "full_ensemble")
BARE_SERVICE = "benchmarks.serving.bare_service:BareService"
ROW_BODY = json.dumps({"row": [0.5] * 45})
IDS = {"BODY_MODE": "ids", "N_CUSTOMERS": str(N_CUSTOMERS)}
# name -> (target, extra environment, wrk environment); the peak steps, in the order of each round.
PEAK_STEPS: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "bare_bentoml_api": (BARE_SERVICE, {}, {"BODY_MODE": "row", "ROW": ROW_BODY}),
    "full_cache_1h": (CHURN_SERVICE, {}, IDS),
    "full_no_cache": (CHURN_SERVICE, {"CHURNOPS_SERVING__FEATURE_CACHE_TTL_SECONDS": "0"}, IDS),
}


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def settle(max_load: float, cooldown: float, max_seconds: float) -> dict[str, Any]:
    """Wait at least ``cooldown`` s, then until the 1-min load is at most ``max_load`` (at most
    ``max_seconds`` in all); returns the load at the start of the wait, the seconds waited, whether the
    load fell below the bound, and the load now (``/proc/loadavg``)."""
    begin, at_start = time.monotonic(), loadavg()
    time.sleep(min(cooldown, max_seconds))
    while load1() > max_load and time.monotonic() - begin < max_seconds:
        time.sleep(2)
    return {
        "load_at_end_of_previous": at_start,
        "waited_s": round(time.monotonic() - begin, 1),
        "settled": load1() <= max_load,
        "load_before": loadavg(),
    }


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Best and median of the peaks of a step's rounds."""
    rps = [r["peak"]["rps"] for r in rounds]
    p50 = [r["peak"]["p50_ms"] for r in rounds if r["peak"]["p50_ms"] is not None]
    p99 = [r["peak"]["p99_ms"] for r in rounds if r["peak"]["p99_ms"] is not None]
    return {
        "rounds": rounds,
        "best_rps": max(rps),
        "median_rps": statistics.median(rps),
        "median_p50_ms": statistics.median(p50) if p50 else None,
        "median_p99_ms": statistics.median(p99) if p99 else None,
        "errors": sum(r["peak"]["errors"] for r in rounds),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating peak rounds of each service")
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--rate-seconds", type=int, default=60)
    ap.add_argument("--peak-seconds", type=int, default=15)
    ap.add_argument("--warmup-seconds", type=int, default=5)
    ap.add_argument("--max-load", type=float, default=2.0, help="wait for the 1-min load to fall to this")
    ap.add_argument("--cooldown-seconds", type=float, default=10.0, help="at least this between steps")
    ap.add_argument("--settle-max-seconds", type=float, default=120.0, help="at most this between steps")
    ap.add_argument("--out", type=Path, default=REPO / ".churnops" / "bench" / "serving.json")
    ap.add_argument("--only", nargs="+", choices=STEPS, help="run only these steps")
    args = ap.parse_args()
    require_tool("wrk", WRK_HOW)
    venv_tool("bentoml")
    redis_url = Settings().feature_store.redis_url.get_secret_value()
    require_redis(redis_url)
    selected = [s for s in STEPS if not args.only or s in args.only]

    def wait() -> dict[str, Any]:
        return settle(args.max_load, args.cooldown_seconds, args.settle_max_seconds)

    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores",
        "workers": args.workers,
        "max_load": args.max_load,
        "steps": {},
    }
    steps: dict[str, Any] = results["steps"]
    with scratch_service(redis_url, args.workers) as scratch:
        env = {**scratch.env}
        peak_steps = [s for s in PEAK_STEPS if s in selected]
        serve_full = "full_rate" in selected and "full_cache_1h" not in peak_steps
        procs: dict[str, Any] = {}
        urls: dict[str, str] = {}
        deploy(scratch.settings, scratch.champion)
        try:
            for name in [*peak_steps, *(["full_cache_1h"] if serve_full else [])]:
                target, extra, _ = PEAK_STEPS[name]
                port = free_port()
                procs[name] = start(target, {**env, **extra}, port, scratch.home / f"{name}.log")
                urls[name] = f"http://127.0.0.1:{port}/predict"
            for name in procs:
                wrk(urls[name], args.warmup_seconds, PEAK_STEPS[name][2])  # warm-up (fills the cache)
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in peak_steps}
            for r in range(args.rounds):
                for name in peak_steps:
                    step: dict[str, Any] = {"round": r + 1, **wait()}
                    step["peak"] = wrk(urls[name], args.peak_seconds, PEAK_STEPS[name][2])
                    step["load_after"] = loadavg()
                    rounds[name].append(step)
                    print(name, json.dumps(step), flush=True)
            for name in peak_steps:
                steps[name] = summary(rounds[name])
            if "full_rate" in selected and args.rate_seconds > 0:
                step = wait()
                step["fixed_rate"] = fixed_rate(
                    urls["full_cache_1h"], args.rate, args.rate_seconds, N_CUSTOMERS
                )
                step["load_after"] = loadavg()
                steps["full_rate"] = step
                print("full_rate", json.dumps(step), flush=True)
        finally:
            for proc in procs.values():
                stop(proc)
        if "full_ensemble" in selected:
            ensemble = register_ensemble(scratch.settings)
            deploy(scratch.settings, ensemble)
            port = free_port()
            proc = start(CHURN_SERVICE, env, port, scratch.home / "full_ensemble.log")
            url = f"http://127.0.0.1:{port}/predict"
            try:
                wrk(url, args.warmup_seconds, IDS)
                step = wait()
                step["peak"] = wrk(url, args.peak_seconds, IDS)
                if args.rate_seconds > 0:
                    step["load_before_rate"] = wait()["load_before"]
                    step["fixed_rate"] = fixed_rate(url, args.rate, args.rate_seconds, N_CUSTOMERS)
                step["load_after"] = loadavg()
                steps["full_ensemble"] = step
                print("full_ensemble", json.dumps(step), flush=True)
            finally:
                stop(proc)
                deploy(scratch.settings, scratch.champion)
        if "bare_bentoml_api" in steps:
            bare = steps["bare_bentoml_api"]
            for name in ("full_cache_1h", "full_no_cache"):
                if name in steps:
                    steps[name]["peak_vs_bare_median"] = steps[name]["median_rps"] / bare["median_rps"]
                    steps[name]["peak_vs_bare_best"] = steps[name]["best_rps"] / bare["best_rps"]
        if "full_ensemble" in steps and "full_cache_1h" in steps:
            steps["full_ensemble"]["peak_vs_single_median"] = (
                steps["full_ensemble"]["peak"]["rps"] / steps["full_cache_1h"]["median_rps"]
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
