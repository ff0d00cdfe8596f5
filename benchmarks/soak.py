"""Soak: a bounded open-loop load on the real full churn service, per minute and overall.

    .venv/bin/python -m benchmarks.soak [--rate 500] [--duration 300] [--workers 2]

Run from the repository root; needs Redis at ``feature_store.redis_url`` (``make services``). It builds the
throw-away serving home of ``benchmarks.serving.harness`` (two small LightGBM versions in MLflow, 10,000
customers' features in Redis under a unique prefix, removed at the end), starts ``bentoml serve
bento.service:ChurnService`` with ``--workers`` workers (Redis online store, Redis rate limit, 1 h feature
cache, no warm-up: the first minute includes the cold cache), and sends ``POST /predict`` with one random
customer id at ``--rate`` requests/s for ``--duration`` seconds from an open-loop aiohttp client (on uvloop
when installed; ``--loop asyncio`` for the default loop). Latency is measured from each request's SCHEDULED
send time, so queueing counts.

Client and server apart: per minute the client's send lag (P99 and max: how late it started requests) and
the CPU of the service's process tree and of the load generator (% of one core); over the run the
service's own latency from its ``/metrics`` histogram ``churn_request_seconds`` (the fast-path handler; the
predict endpoints bypass BentoML's middlewares, so its own request histograms do not count them), read
before and after the load only (a scrape holds a worker's event loop for ~40 ms).

Printed per minute (``--bucket-seconds``; requests fall into the minute of their scheduled send time) and
overall: requests, error rate (any status but 200, or no response), P50 / P95 / P99 / P99.9, the service's
RSS (sum over its process tree, sampled every ``--rss-interval`` seconds) and the 1-minute load average.
Then the RSS growth from the first minute's mean to the last minute's mean, and the prediction log's rows
(read after the service stopped and flushed it) against the number of 200 responses: one customer per
request, so they must be equal. The targets are printed beside the figures; the exit code is 1 when any is
missed. JSON goes to ``--out`` (default ``.churnops/bench/soak.json``). The service log and the
prediction log stay in the temporary home the run prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import psutil
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.process_tree import tree_rss
from benchmarks.serving.harness import (
    CHURN_SERVICE,
    N_CUSTOMERS,
    REPO,
    OpenLoopResult,
    free_port,
    latency_ms,
    loadavg,
    run_open_loop,
    scratch_service,
    start,
    stop,
)
from benchmarks.tools import require_redis, venv_tool
from churn_assets.serving.prediction_log import read_predictions, wal_dir
from churn_assets.settings import Settings

TARGET_ERROR_RATE = 0.001  # < 0.1 %
TARGET_P99_MS = 40.0  # in every minute
TARGET_RSS_GROWTH = 0.10  # < 10 %, first minute -> last minute


class RssSampler:
    """Samples, in a thread, every ``interval`` seconds: seconds since ``t0``, summed RSS of the process tree
    under ``pid``, the 1-min load, and the CPU seconds used so far by that tree (the service) and by this
    process (the load generator)."""

    def __init__(self, pid: int, interval: float, t0: float) -> None:
        self.root, self.interval, self.t0 = psutil.Process(pid), interval, t0
        self.samples: list[tuple[float, int, float]] = []
        self.cpu: list[tuple[float, float, float]] = []  # (t, service CPU s, client CPU s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            total, _, _ = tree_rss(self.root)
            t = time.perf_counter() - self.t0
            self.samples.append((t, total, os.getloadavg()[0]))
            self.cpu.append((t, tree_cpu(self.root), time.process_time()))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def tree_cpu(root: psutil.Process) -> float:
    """User + system CPU seconds of ``root`` and its live descendants."""
    total = 0.0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += t.user + t.system
    return total


# The service's own latency histograms on /metrics (summed over their other labels): the fast path's
# handler time.
SERVER_HISTOGRAMS = {
    "handler": ("churn_request_seconds", "endpoint", "predict"),
}


def scrape(metrics_url: str) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts (upper bound -> count) of each of :data:`SERVER_HISTOGRAMS`."""
    text = httpx.get(metrics_url, timeout=10).text
    out: dict[str, dict[float, float]] = {key: {} for key in SERVER_HISTOGRAMS}
    for family in text_string_to_metric_families(text):
        for key, (name, label, value) in SERVER_HISTOGRAMS.items():
            if family.name != name:
                continue
            for sample in family.samples:
                if sample.name == f"{name}_bucket" and sample.labels.get(label) == value:
                    le = float(sample.labels["le"])
                    out[key][le] = out[key].get(le, 0.0) + sample.value
    return out


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket holding rank ``q * n``."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = cumulative[upper]
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


def server_latency(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]
) -> dict[str, Any]:
    """Per histogram: requests and P50 / P95 / P99 / P99.9 in ms (bucket-interpolated) of the run."""
    out: dict[str, Any] = {}
    for key, cum in after.items():
        delta = {le: c - before.get(key, {}).get(le, 0.0) for le, c in cum.items()}
        n = delta.get(float("inf"), 0.0)
        out[key] = {"requests": int(n)} | {
            k: (None if (v := histogram_quantile(q, delta)) is None else round(v * 1000, 2))
            for k, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99), ("p999_ms", 0.999))
        }
    return out


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def lag_ms(send_lag: np.ndarray) -> dict[str, float | None]:
    """P99 and max of the client's send lag in ms (None without requests)."""
    lag = send_lag[~np.isnan(send_lag)] * 1000
    if lag.size == 0:
        return {"send_lag_p99_ms": None, "send_lag_max_ms": None}
    return {
        "send_lag_p99_ms": round(float(np.percentile(lag, 99)), 2),
        "send_lag_max_ms": round(float(lag.max()), 2),
    }


def cpu_share(cpu: list[tuple[float, float, float]], start: float, end: float) -> tuple[float, float] | None:
    """(service, client) CPU in % of one core between ``start`` and ``end`` seconds (None: no samples)."""
    if len(cpu) < 2 or end <= start:
        return None
    t = np.asarray([c[0] for c in cpu])
    end = min(end, float(t[-1]))
    if end <= start:
        return None
    shares = []
    for k in (1, 2):
        used = np.asarray([c[k] for c in cpu])
        shares.append(
            round(float(np.interp(end, t, used) - np.interp(start, t, used)) / (end - start) * 100, 1)
        )
    return shares[0], shares[1]


def per_bucket(result: OpenLoopResult, sampler: RssSampler, bucket: float) -> list[dict[str, Any]]:
    """One row per ``bucket`` seconds of scheduled send time: requests, errors, latency, the client's send
    lag, RSS, load and CPU (service, client)."""
    samples = sampler.samples
    n_buckets = max(1, int(np.ceil(result.scheduled[-1] / bucket + 1e-9))) if result.requests else 1
    index = np.minimum((result.scheduled // bucket).astype(int), n_buckets - 1)
    times = np.asarray([s[0] for s in samples])
    rss = np.asarray([s[1] for s in samples], dtype=float)
    load = np.asarray([s[2] for s in samples])
    rows = []
    for b in range(n_buckets):
        sel = index == b
        n = int(sel.sum())
        errors = int((result.status[sel] != 200).sum())
        in_bucket = (times >= b * bucket) & (times < (b + 1) * bucket)
        cpu = cpu_share(sampler.cpu, b * bucket, (b + 1) * bucket)
        rows.append(
            {
                "bucket": b + 1,
                "requests": n,
                "errors": errors,
                "error_rate": errors / n if n else 0.0,
                **latency_ms(result.latency[sel]),
                **lag_ms(result.send_lag[sel]),
                "rss_mb": round(float(rss[in_bucket].mean()) / 1e6, 1) if in_bucket.any() else None,
                "load_1m": round(float(load[in_bucket].mean()), 2) if in_bucket.any() else None,
                "service_cpu_pct": cpu[0] if cpu else None,
                "client_cpu_pct": cpu[1] if cpu else None,
            }
        )
    return rows


def log_rows(settings: Settings) -> tuple[int, int]:
    """(rows the service wrote to the prediction log, rows still only in a write-ahead file)."""
    logged = read_predictions(settings).filter(pl.col("source") == "http").height
    wal = wal_dir(settings)
    unflushed = sum(len(p.read_bytes().splitlines()) for p in wal.glob("*.wal")) if wal.exists() else 0
    return logged, unflushed


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def report(summary: dict[str, Any], bucket_label: str) -> None:
    print(
        f"\n{bucket_label:>6} {'requests':>9} {'errors':>7} {'err %':>7} {'p50':>7} {'p95':>7} "
        f"{'p99':>7} {'p99.9':>7} {'lag99':>6} {'lagmax':>7} {'RSS MB':>8} {'load':>5} {'svc%':>5} {'cli%':>5}"
    )
    rows = [*summary["buckets"], {**summary["overall"], "bucket": "all"}]
    for r in rows:
        print(
            f"{r['bucket']!s:>6} {r['requests']:>9} {r['errors']:>7} {r['error_rate'] * 100:>7.3f} "
            f"{fmt(r['p50_ms']):>7} {fmt(r['p95_ms']):>7} {fmt(r['p99_ms']):>7} {fmt(r['p999_ms']):>7} "
            f"{fmt(r['send_lag_p99_ms']):>6} {fmt(r['send_lag_max_ms']):>7} "
            f"{fmt(r.get('rss_mb')):>8} {fmt(r.get('load_1m'), '.2f'):>5} "
            f"{fmt(r.get('service_cpu_pct'), '.0f'):>5} {fmt(r.get('client_cpu_pct'), '.0f'):>5}"
        )
    print(
        "(latency from the scheduled send time; lag99 / lagmax: how late the client started requests; svc% / "
        "cli%: CPU of the service's process tree / of this load generator, in % of one core)"
    )
    print("\nserver side over the run (the service's /metrics histograms, bucket-interpolated):")
    for key, s in summary["server_latency"].items():
        print(
            f"  {key:<12} {s['requests']:>9} requests  P50 {fmt(s['p50_ms'])}  P95 {fmt(s['p95_ms'])}  "
            f"P99 {fmt(s['p99_ms'])}  P99.9 {fmt(s['p999_ms'])} ms"
        )
    t = summary["targets"]
    o = summary["overall"]
    growth = summary["rss_growth"]
    print(
        f"\nachieved {o['achieved_rps']:.1f} requests/s of {summary['rate']:g} "
        f"({o['requests']} requests in {o['elapsed_seconds']:.1f} s); client on {summary['client_loop']}, "
        f"{o['client_cpu_pct']:.0f} % of a core"
    )
    print(f"error rate        {o['error_rate'] * 100:.3f} %   (target < 0.1 %: {verdict(t['error_rate'])})")
    print(
        f"P99 per {bucket_label:<9} max {fmt(summary['max_bucket_p99_ms'])} ms   "
        f"(target <= {TARGET_P99_MS:g} ms in every {bucket_label}: {verdict(t['p99_every_bucket'])})"
    )
    growth_text = "-" if growth is None else f"{growth * 100:+.1f} %"
    print(
        f"RSS growth        {growth_text}   first {bucket_label} -> last {bucket_label} "
        f"(target < 10 %: {verdict(t['rss_growth'])}{'' if growth is not None else ', needs 2 ' + bucket_label + 's'})"
    )
    lv = summary["log_vs_responses"]
    print(
        f"prediction log    {lv['log_rows']} rows vs {lv['ok_responses']} responses 200 "
        f"({'equal' if t['log_equals_responses'] else 'NOT equal'}; {lv['wal_rows_unflushed']} rows left "
        "unflushed in write-ahead files)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=500.0, help="Requests per second (open loop).")
    ap.add_argument("--duration", type=float, default=300.0, help="Seconds of load.")
    ap.add_argument("--workers", type=int, default=2, help="BentoML workers of the service.")
    ap.add_argument("--customers", type=int, default=N_CUSTOMERS, help="Customers in the online store.")
    ap.add_argument(
        "--bucket-seconds", type=float, default=60.0, help="Length of a reporting 'minute' (shorter runs)."
    )
    ap.add_argument("--rss-interval", type=float, default=5.0, help="Seconds between RSS samples.")
    ap.add_argument("--timeout", type=float, default=30.0, help="Client timeout per request (seconds).")
    ap.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="The client's event loop (auto: uvloop when installed).",
    )
    ap.add_argument("--out", type=Path, default=REPO / ".churnops" / "bench" / "soak.json")
    args = ap.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.bucket_seconds <= 0:
        ap.error("--rate, --duration and --bucket-seconds must be positive")
    venv_tool("bentoml")
    redis_url = Settings().feature_store.redis_url.get_secret_value()
    require_redis(redis_url)
    bucket_label = "minute" if args.bucket_seconds == 60 else f"{args.bucket_seconds:g}s"

    with scratch_service(redis_url, args.workers, args.customers, label="soak") as scratch:
        print(f"home {scratch.home}; load before {loadavg()}", flush=True)
        port = free_port()
        proc = start(CHURN_SERVICE, scratch.env, port, scratch.home / "soak_service.log")
        try:
            url = f"http://127.0.0.1:{port}/predict"
            print(
                f"service ready on {url} ({args.workers} workers); {args.rate:g} requests/s for "
                f"{args.duration:g} s",
                flush=True,
            )
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            before = scrape(metrics_url)  # not during the load: a scrape stalls a worker's event loop
            t0 = time.perf_counter()
            with RssSampler(proc.pid, args.rss_interval, t0) as sampler:
                result = run_open_loop(
                    url, args.rate, args.duration, args.customers, loop=args.loop, timeout=args.timeout
                )
            after = scrape(metrics_url)
        finally:
            stop(proc)
        logged, unflushed = log_rows(scratch.settings)
        load_after = loadavg()

    buckets = per_bucket(result, sampler, args.bucket_seconds)
    first, last = buckets[0]["rss_mb"], buckets[-1]["rss_mb"]
    growth = (last - first) / first if len(buckets) > 1 and first and last is not None else None
    bucket_p99 = [b["p99_ms"] for b in buckets if b["p99_ms"] is not None]
    errors = int((result.status != 200).sum())
    run_cpu = cpu_share(sampler.cpu, 0.0, result.elapsed)
    overall: dict[str, Any] = {
        "requests": result.requests,
        "errors": errors,
        "error_rate": errors / result.requests if result.requests else 0.0,
        **latency_ms(result.latency),
        **lag_ms(result.send_lag),
        "elapsed_seconds": round(result.elapsed, 2),
        "achieved_rps": round(result.requests / result.elapsed, 1) if result.elapsed else 0.0,
        "status_counts": dict(Counter(str(int(s)) for s in result.status)),
        "rss_mb": round(float(np.mean([s[1] for s in sampler.samples])) / 1e6, 1)
        if sampler.samples
        else None,
        "load_1m": round(float(np.mean([s[2] for s in sampler.samples])), 2) if sampler.samples else None,
        "client_cpu_pct": round(result.client_cpu_seconds / result.elapsed * 100, 1)
        if result.elapsed
        else 0.0,
        "service_cpu_pct": run_cpu[0] if run_cpu else None,
    }
    targets = {
        "error_rate": overall["error_rate"] < TARGET_ERROR_RATE,
        "p99_every_bucket": bool(bucket_p99) and max(bucket_p99) <= TARGET_P99_MS,
        "rss_growth": growth is not None and growth < TARGET_RSS_GROWTH,
        "log_equals_responses": logged == result.ok,
    }
    summary = {
        "rate": args.rate,
        "duration_seconds": args.duration,
        "workers": args.workers,
        "customers": args.customers,
        "bucket_seconds": args.bucket_seconds,
        "client_loop": result.loop,
        "machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "load_after": load_after,
        "overall": overall,
        "buckets": buckets,
        "max_bucket_p99_ms": max(bucket_p99) if bucket_p99 else None,
        "server_latency": server_latency(before, after),
        "rss_growth": growth,
        "rss_samples": [{"t": round(t, 1), "rss_mb": round(r / 1e6, 1)} for t, r, _ in sampler.samples],
        "log_vs_responses": {"log_rows": logged, "ok_responses": result.ok, "wal_rows_unflushed": unflushed},
        "targets": targets,
        "home": str(scratch.home),
    }
    report(summary, bucket_label)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"\nJSON: {args.out}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
