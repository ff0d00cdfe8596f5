"""Cost of the per-customer rate-limit strategies of ``limits`` in the real Redis (docs/serving.md).

    .venv/bin/python -m benchmarks.serving.rate_limit [--redis-url redis://127.0.0.1:6379/0] [--hits 3000]

For each strategy (fixed window, moving window, sliding-window counter) at ``1000/minute``: microseconds per
``hit`` (3 customers hit in turn, so each fills its window to the limit) and the largest Redis key afterwards
(``MEMORY USAGE``). Keys use a unique prefix and are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import redis
from limits import parse
from limits.storage import RedisStorage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

from benchmarks.tools import require_redis


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--hits", type=int, default=3000)
    args = ap.parse_args()
    require_redis(args.redis_url)
    client = redis.Redis.from_url(args.redis_url)
    item = parse("1000/minute")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    strategies: list[tuple[str, type[RateLimiter]]] = [
        ("fixed window", FixedWindowRateLimiter),
        ("moving window", MovingWindowRateLimiter),
        ("sliding-window counter", SlidingWindowCounterRateLimiter),
    ]
    for name, cls in strategies:
        prefix = f"churnops-bench:{uuid.uuid4().hex[:12]}"
        limiter = cls(RedisStorage(args.redis_url, key_prefix=prefix))
        try:
            for i in range(200):  # warm-up: scripts loaded, connection open
                limiter.hit(item, f"warm{i}")
            start = time.perf_counter()
            for i in range(args.hits):
                limiter.hit(item, str(i % 3))
            per_hit_us = (time.perf_counter() - start) / args.hits * 1e6
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            largest = max((client.memory_usage(k) or 0) for k in keys if b"warm" not in k)
            print(f"{name}: {per_hit_us:.0f} us per hit, largest key {largest:,} bytes")
        finally:
            for key in client.scan_iter(match=f"{prefix}:*"):
                client.delete(key)


if __name__ == "__main__":
    main()
