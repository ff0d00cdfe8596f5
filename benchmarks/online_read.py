"""Benchmark: online-store read latency, SQLite vs Redis (the real server at ``--redis-url``).

Fills each backend with ``--customers`` customers × 45 features (5 groups, as the materialization
writes them), then times through the public API (:meth:`OnlineStore.read`, decode included):

* ``--single`` reads of one random customer, all 45 features;
* ``--batch-reads`` reads of ``--batch-size`` random customers in one call.

Prints p50/p99/mean per backend and read shape. Targets: Redis p99 ≤ 0.5 ms (1 customer) and
≤ 5 ms (100 customers). The Redis data lives under a unique key prefix and is deleted afterwards.

Usage::

    .venv/bin/python -m benchmarks.online_read                    # 500k customers
    .venv/bin/python -m benchmarks.online_read --customers 20000 --single 2000 --batch-reads 200

(from the repository root; Redis must answer at ``--redis-url`` unless ``--skip-redis``: ``make services``)
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks.pit_retrieval import group_table
from benchmarks.tools import require_redis
from churn_assets.feature_store.definitions import FEATURE_GROUPS
from churn_assets.feature_store.online import OnlineStore, RedisOnlineStore, SQLiteOnlineStore

NOW = dt.datetime(2024, 6, 10)
SNAPSHOT = dt.datetime(2024, 6, 3)
TARGETS_MS = {"redis": {1: 0.5, 100: 5.0}}


def fill(store: OnlineStore, customers: int) -> float:
    """Write every group for ``customers`` customers; returns seconds taken."""
    started = time.perf_counter()
    for i, group in enumerate(FEATURE_GROUPS):
        store.write(group.name, group_table(group, customers, [SNAPSHOT], seed=i), now=NOW)
    return time.perf_counter() - started


def latencies_ms(store: OnlineStore, ids: np.ndarray) -> np.ndarray:
    """Milliseconds per ``read`` call, one call per row of ``ids`` (shape: calls × customers)."""
    out = np.empty(len(ids))
    for i, batch in enumerate(ids.tolist()):
        started = time.perf_counter_ns()
        result = store.read(batch, now=NOW)
        out[i] = (time.perf_counter_ns() - started) / 1e6
        assert len(result) == len(batch)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=500_000)
    parser.add_argument("--single", type=int, default=10_000, help="single-customer reads")
    parser.add_argument("--batch-reads", type=int, default=1_000, help="reads of --batch-size customers")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.skip_redis:
        require_redis(args.redis_url)

    rng = np.random.default_rng(args.seed)
    single = rng.integers(0, args.customers, (args.single, 1))
    batches = rng.integers(0, args.customers, (args.batch_reads, args.batch_size))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        backends: list[tuple[str, OnlineStore]] = [("sqlite", SQLiteOnlineStore(Path(tmp) / "online.sqlite"))]
        if not args.skip_redis:
            prefix = f"churnops-bench:{uuid.uuid4().hex[:8]}"
            backends.append(("redis", RedisOnlineStore(args.redis_url, prefix)))
        for name, store in backends:
            try:
                seconds = fill(store, args.customers)
                print(
                    f"{name}: wrote {args.customers:,} customers × 45 features in {seconds:.1f}s", flush=True
                )
                latencies_ms(store, single[:200])  # warm-up
                for size, ids in ((1, single), (args.batch_size, batches)):
                    ms = latencies_ms(store, ids)
                    target = TARGETS_MS.get(name, {}).get(size)
                    rows.append((name, size, len(ids), *np.percentile(ms, [50, 99]), ms.mean(), target))
            finally:
                store.clear()
                store.close()
    print()
    print(
        f"{'backend':<9}{'customers/read':>15}{'reads':>8}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'target p99':>15}"
    )
    for name, size, reads, p50, p99, mean, target in rows:
        goal = "-" if target is None else f"≤ {target:g} {'ok' if p99 <= target else 'MISSED'}"
        print(f"{name:<9}{size:>15}{reads:>8,}{p50:>9.3f}{p99:>9.3f}{mean:>9.3f}{goal:>15}")


if __name__ == "__main__":
    main()
