"""Where a request's time goes: py-spy over the full churn service's workers under ``wrk`` peak load.

    .venv/bin/python -m benchmarks.serving.profile [--seconds 20] [--rate 100] [--svg docs/images/serving_flame.svg]

The serving benchmark's throw-away home and full service (``benchmarks.serving.harness``: 2 workers, Redis
online store and rate limit, 1 h feature cache, prediction log on), warmed with ``wrk`` for
``--warmup-seconds``; then ``wrk -t2 -c16`` (``post.lua``, one random customer id per request) for
``--seconds`` while py-spy samples every process of the service (``--subprocesses``: both workers, the
circus arbiter) ``--rate`` times a second, non-blocking (the service is never paused), idle threads left
out. It writes the flame graph (SVG) and the same samples as collapsed stacks (``.txt`` beside it), and
prints wrk's throughput and the frames with the largest inclusive share of the workers' samples, so the
reading of the graph can be checked as text. py-spy is in the dev extra and needs ptrace rights on the
workers (root, or ``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import time
from pathlib import Path

from benchmarks.serving.harness import (
    CHURN_SERVICE,
    N_CUSTOMERS,
    REPO,
    free_port,
    loadavg,
    scratch_service,
    start,
    stop,
)
from benchmarks.serving.run import wrk
from benchmarks.tools import WRK_HOW, require_redis, require_tool, venv_tool
from churn_assets.settings import Settings


def py_spy(pid: int, seconds: int, rate: int, out: Path, fmt: str, gil: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(venv_tool("py-spy")),
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",
            "--duration",
            str(seconds),
            "--rate",
            str(rate),
            "--format",
            fmt,
            "--output",
            str(out),
            *(["--gil"] if gil else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def shares(collapsed: Path, top: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Of the samples of the service's workers (the arbiter left out): the frames (function and file, line
    numbers dropped) with the largest inclusive share (each frame counted once per sample) and the largest
    self share (the innermost frame)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        parts = stack.split(";")
        processes = [p for p in parts if p.startswith("process ")]  # py-spy's: arbiter, then worker
        if not processes or "_bentoml_impl.worker.service" not in processes[-1]:
            continue  # the arbiter (circus)
        samples = int(n)
        total += samples
        frames = [re.sub(r":\d+\)$", ")", f) for f in parts[len(processes) :]]
        for frame in set(frames):
            inclusive[frame] += samples
        if frames:
            own[frames[-1]] += samples
    if not total:
        return [], []
    return (
        [(f, n / total) for f, n in inclusive.most_common(top)],
        [(f, n / total) for f, n in own.most_common(top)],
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--warmup-seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--svg", type=Path, default=REPO / ".churnops" / "bench" / "serving_flame.svg")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument(
        "--gil",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="sample only the thread holding the GIL (the Python CPU time; default) or every busy thread",
    )
    args = ap.parse_args()
    require_tool("wrk", WRK_HOW)
    venv_tool("py-spy")
    redis_url = Settings().feature_store.redis_url.get_secret_value()
    require_redis(redis_url)
    args.svg.parent.mkdir(parents=True, exist_ok=True)
    collapsed = args.svg.with_suffix(".txt")
    with scratch_service(redis_url, args.workers, label="profile") as scratch:
        port = free_port()
        proc = start(CHURN_SERVICE, scratch.env, port, scratch.home / "profile.log")
        url = f"http://127.0.0.1:{port}/predict"
        env = {"BODY_MODE": "ids", "N_CUSTOMERS": str(N_CUSTOMERS)}
        try:
            wrk(url, args.warmup_seconds, env)
            print(f"load before: {loadavg()}", flush=True)
            spies = [
                py_spy(proc.pid, args.seconds - 2, args.rate, args.svg, "flamegraph", args.gil),
                py_spy(proc.pid, args.seconds - 2, args.rate, collapsed, "raw", args.gil),
            ]
            time.sleep(0.5)
            peak = wrk(url, args.seconds, env)
            for spy in spies:
                _, err = spy.communicate(timeout=120)
                if spy.returncode != 0:
                    raise SystemExit(f"py-spy failed: {err.decode()[-2000:]}")
            print(f"load after: {loadavg()}; wrk under the profiler: {json.dumps(peak)}", flush=True)
        finally:
            stop(proc)
    print(f"flame graph: {args.svg}\ncollapsed stacks: {collapsed}")
    inclusive, own = shares(collapsed, args.top)
    for title, rows in (("inclusive", inclusive), ("self", own)):
        print(f"largest {title} shares of the workers' samples:")
        for frame, share in rows:
            print(f"{share:6.1%}  {frame}")


if __name__ == "__main__":
    main()
