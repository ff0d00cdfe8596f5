"""Resilience parts of the service, built on libraries: a TTL feature cache (``cachetools``), a per-customer
rate limit (``limits`` moving window, Redis-backed when configured), a circuit breaker (``pybreaker``) that
trips on an error RATE over a sliding window (pybreaker itself counts consecutive failures only), and the
per-request :class:`Deadline` that bounds a request's work in the thread pool.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pybreaker
from limits import parse
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from churn_assets.settings import Settings

T = TypeVar("T")
BREAKER_STATE_CODE = {"closed": 0, "half-open": 1, "open": 2}


class FeatureStoreUnavailable(RuntimeError):
    """The breaker is open (or the store just failed): id-only requests cannot be served."""


class RateBreaker:
    """A pybreaker ``CircuitBreaker`` that opens when the share of failed calls within the last
    ``window_seconds`` exceeds ``error_rate`` (with at least ``min_calls`` calls in the window); it
    half-opens after ``reset_seconds`` and closes on the next success (pybreaker's state machine)."""

    def __init__(
        self, error_rate: float, window_seconds: float, min_calls: int, reset_seconds: float
    ) -> None:
        self.error_rate, self.window, self.min_calls = error_rate, window_seconds, min_calls
        self._calls: collections.deque[tuple[float, bool]] = collections.deque()
        self._failures = 0
        self._lock = threading.Lock()
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=2**31, reset_timeout=reset_seconds, listeners=[_Reset(self)], name="feature_store"
        )

    @property
    def state(self) -> str:
        return str(self.breaker.current_state)

    def _record(self, ok: bool) -> bool:
        """Add a call outcome; True when the windowed error rate now exceeds the limit."""
        now = time.monotonic()
        with self._lock:
            self._calls.append((now, ok))
            self._failures += not ok
            while self._calls and now - self._calls[0][0] > self.window:
                _, old_ok = self._calls.popleft()
                self._failures -= not old_ok
            n = len(self._calls)
            return n >= self.min_calls and self._failures / n > self.error_rate

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
            self._failures = 0

    def call(self, func: Callable[..., T], *args: Any) -> T:
        try:
            result = self.breaker.call(func, *args)
        except pybreaker.CircuitBreakerError as exc:
            raise FeatureStoreUnavailable(f"feature store circuit is {self.state}: {exc}") from exc
        except Exception as exc:
            if self.state == "closed" and self._record(False):
                self.breaker.open()
            raise FeatureStoreUnavailable(f"feature store failed: {type(exc).__name__}: {exc}") from exc
        if self.state == "closed":
            self._record(True)
        return result


class _Reset(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: RateBreaker) -> None:
        self.owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        if new_state is not None and new_state.name == "closed":
            self.owner.clear()


class CustomerRateLimit:
    """``settings.serving.rate_limit`` per customer id over a MOVING window (``limits``), in Redis or memory.

    The moving window keeps one timestamp per hit (a Redis list per customer, trimmed to the limit, via
    ``limits``' Lua scripts): at most ``N`` hits in ANY window of the period, also across a window boundary
    (a fixed window lets ``2N`` through there). Retry-After = when the oldest hit in the window expires.
    """

    def __init__(self, settings: Settings) -> None:
        cfg = settings.serving
        self.item = parse(cfg.rate_limit)
        use_redis = cfg.rate_limit_storage == "redis" or (
            cfg.rate_limit_storage == "auto" and settings.feature_store.online_backend == "redis"
        )
        storage: Storage = (
            RedisStorage(
                cfg.redis_url.get_secret_value(),
                key_prefix=f"{cfg.redis_key_prefix}:ratelimit",
                socket_timeout=1.0,
            )
            if use_redis
            else MemoryStorage()
        )
        self.backend = "redis" if use_redis else "memory"
        self.limiter = MovingWindowRateLimiter(storage)

    def hit(self, customer_id: int) -> float | None:
        """None when allowed, else seconds until the customer's oldest hit leaves the window (Retry-After)."""
        key = str(customer_id)
        if self.limiter.hit(self.item, key):
            return None
        reset_at = self.limiter.get_window_stats(self.item, key).reset_time
        return max(1.0, reset_at - time.time())


class RequestTimedOut(Exception):
    """A request ran past its deadline; ``stage`` is what it was doing (or about to start)."""

    def __init__(self, stage: str, seconds: float) -> None:
        super().__init__(f"request exceeded {seconds:g} s (stage: {stage})")
        self.stage, self.seconds = stage, seconds


class Deadline:
    """One request's time budget, shared by the event loop and the worker thread doing the request's work.

    Threads cannot be killed, so the work is stopped cooperatively: it announces each stage with
    :meth:`enter` (raises :class:`RequestTimedOut` once the deadline has passed) and calls :meth:`commit`
    right before its only side effect, the prediction-log write. When the event loop stops waiting it calls
    :meth:`expire`: True = the work has not committed and never will (answer 504: nothing of it is returned
    or logged), False = it already committed (only the log write is left; wait for its answer). So a
    prediction is logged exactly when it is returned.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self._clock = seconds, clock
        self.at = clock() + seconds
        self.stage = "queued"
        self._expired = self._committed = False
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    def _check(self, stage: str) -> None:  # under the lock
        if self._expired or self._clock() >= self.at:
            self._expired = True
            raise RequestTimedOut(stage, self.seconds)

    def enter(self, stage: str) -> None:
        """Start ``stage``, or raise :class:`RequestTimedOut` when the deadline has passed."""
        with self._lock:
            self._check(stage)
            self.stage = stage

    def commit(self) -> None:
        """The point of no return (before logging); raises :class:`RequestTimedOut` when too late."""
        with self._lock:
            self._check("commit")
            self._committed = True

    def expire(self) -> bool:
        """Called by the waiter at the deadline: True when the work will not commit any more."""
        with self._lock:
            if not self._committed:
                self._expired = True
            return not self._committed
