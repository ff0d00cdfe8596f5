"""Resilience parts of the service, built on libraries: a TTL feature cache (``cachetools``), a per-customer
rate limit (``limits`` moving window, Redis-backed when configured, with an in-process fallback), a circuit
breaker (``pybreaker``) that trips on an error RATE over a sliding window (pybreaker itself counts consecutive
failures only), and the per-request :class:`Deadline` that bounds a request's work in the thread pool.

Every Redis use on the request path — feature reads, the rate limit, the rollout state — goes through its
own :class:`RateBreaker` over a fail-fast client (short connect and read timeouts, no retried timeouts:
``feature_store.online.fail_fast_redis_options``). Each breaker logs one line per state change.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pybreaker
import redis
from limits import parse
from limits.aio.storage import RedisStorage as AsyncRedisStorage
from limits.aio.strategies import MovingWindowRateLimiter as AsyncMovingWindowRateLimiter
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from churn_assets.feature_store.online import fail_fast_redis_options
from churn_assets.settings import Settings

T = TypeVar("T")
BREAKER_STATE_CODE = {"closed": 0, "half-open": 1, "open": 2}
log = logging.getLogger(__name__)


class StoreUnavailable(RuntimeError):
    """A store behind a :class:`RateBreaker` is unavailable: its breaker is open or the call just failed."""


class FeatureStoreUnavailable(StoreUnavailable):
    """The breaker is open (or the store just failed): id-only requests cannot be served."""


class RateLimitUnavailable(StoreUnavailable):
    """The rate limiter's shared store is unavailable and ``rate_limit_on_store_failure`` is ``closed``."""


class RateBreaker:
    """A pybreaker ``CircuitBreaker`` that opens when the share of failed calls within the last
    ``window_seconds`` exceeds ``error_rate`` (with at least ``min_calls`` calls in the window); it
    half-opens after ``reset_seconds`` and closes on the next success (pybreaker's state machine).

    Store calls run concurrently (outside the breaker's lock). While it is not closed, requests never wait
    for the store: with a ``probe`` (a cheap call to the store) every call is refused at once and a timer
    thread runs the probe ``reset_seconds`` after each opening, its success closing the breaker (so the
    breaker closes within about ``reset_seconds`` of the store's return, with or without traffic); without one, ONE
    call at a time is let through as the trial and concurrent calls are refused at once. Failures raise
    ``error`` (a :class:`StoreUnavailable`) naming ``name``; every state change is logged once.
    """

    def __init__(
        self,
        error_rate: float,
        window_seconds: float,
        min_calls: int,
        reset_seconds: float,
        name: str = "feature store",
        error: type[StoreUnavailable] = FeatureStoreUnavailable,
        probe: Callable[[], object] | None = None,
    ) -> None:
        self.error_rate, self.window, self.min_calls = error_rate, window_seconds, min_calls
        self.name, self.error, self.probe = name, error, probe
        self.reset_seconds = reset_seconds
        self._opens = 0  # times opened: a probe knows whether its failure already scheduled the next one
        self._calls: collections.deque[tuple[float, bool]] = collections.deque()
        self._failures = 0
        self._lock = threading.Lock()
        self._trial = False
        self.last_error = ""
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=2**31, reset_timeout=reset_seconds, listeners=[_Listener(self)], name=name
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

    def _noted(self, func: Callable[..., T], *args: Any) -> T:
        try:
            return func(*args)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise

    def _admit(self) -> bool:
        """Refuse a call (raise ``error``) while the breaker is not closed, except the one trial of a breaker
        without a probe; True when this call is that trial."""
        if self.state == "closed":
            return False
        if self.probe is not None:
            raise self.error(f"{self.name} circuit is open (last error: {self.last_error})")
        with self._lock:
            if self._trial:
                raise self.error(f"{self.name} circuit is open (a trial call is under way)")
            self._trial = True
        return True

    def _end_trial(self, trial: bool) -> None:
        if trial:
            with self._lock:
                self._trial = False

    def _refused(self, exc: pybreaker.CircuitBreakerError, called: bool) -> StoreUnavailable:
        if called:  # the trial itself failed (pybreaker re-opened the circuit)
            return self.error(f"{self.name} failed (trial call): {self.last_error}")
        return self.error(f"{self.name} circuit is open: {exc}")

    def _failed(self) -> StoreUnavailable:
        if self.state == "closed" and self._record(False):
            self.breaker.open()
        return self.error(f"{self.name} failed: {self.last_error}")

    def call(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` through the breaker; raises ``error`` when it is open or the call fails.

        While the breaker is not closed, a breaker with a ``probe`` refuses every call at once (a timer probes
        the store ``reset_seconds`` after each opening); without one, one call at a time is the trial.
        """
        trial = self._admit()
        called = False
        try:
            # Not ``breaker.call``: that holds the breaker's lock for the whole call, so concurrent store
            # calls would queue behind one another (behind every timeout of a frozen store). ``calling()``
            # takes the lock only to check and change the state.
            with self.breaker.calling():
                called = True
                result = self._noted(func, *args)
        except pybreaker.CircuitBreakerError as exc:
            raise self._refused(exc, called) from None
        except Exception as exc:
            raise self._failed() from exc
        finally:
            self._end_trial(trial)
        if self.state == "closed":
            self._record(True)
        return result

    async def acall(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """:meth:`call` for a coroutine function, awaited in the event loop (same states and errors)."""
        trial = self._admit()
        called = False
        try:
            with self.breaker.calling():
                called = True
                try:
                    result = await func(*args)
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    raise
        except pybreaker.CircuitBreakerError as exc:
            raise self._refused(exc, called) from None
        except Exception as exc:
            raise self._failed() from exc
        finally:
            self._end_trial(trial)
        if self.state == "closed":
            self._record(True)
        return result

    def _schedule_probe(self, delay: float) -> None:
        """Probe the store in ``delay`` seconds (the breaker just opened), in a daemon timer thread."""
        if self.probe is None:
            return
        timer = threading.Timer(delay, self._run_probe, args=(self._opens,))
        timer.daemon = True
        timer.start()

    def _run_probe(self, opens: int) -> None:
        with self._lock:
            if self._trial:
                return
            self._trial = True
        try:
            with self.breaker.calling():  # half-opens; success closes, failure re-opens (and reschedules)
                self._noted(self.probe)  # type: ignore[arg-type]
        except Exception:
            pass
        finally:
            with self._lock:
                self._trial = False
        if self.state != "closed" and self._opens == opens:  # too early for pybreaker's clock: again
            self._schedule_probe(0.05)


class _Listener(pybreaker.CircuitBreakerListener):
    """Clears the window when the breaker closes; logs one line per state change."""

    def __init__(self, owner: RateBreaker) -> None:
        self.owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        if new_state is None:
            return
        old = getattr(old_state, "name", "none")
        owner = self.owner
        if new_state.name == "closed":
            owner.clear()
            log.warning("%s circuit breaker closed (%s -> closed): the store answers again", owner.name, old)
        elif new_state.name == "open":
            owner._opens += 1
            owner._schedule_probe(owner.reset_seconds)
            log.warning(
                "%s circuit breaker opened (%s -> open), last error: %s", owner.name, old, owner.last_error
            )
        else:
            log.info("%s circuit breaker half-open: trying the store again", owner.name)


def _ping(storage: RedisStorage) -> None:
    if not storage.check():  # limits returns False on any Redis error
        raise ConnectionError("rate limit store: PING failed")


class CustomerRateLimit:
    """``settings.serving.rate_limit`` per customer id over a MOVING window (``limits``), in Redis or memory.

    The moving window keeps one timestamp per hit (a Redis list per customer, trimmed to the limit, via
    ``limits``' Lua scripts): at most ``N`` hits in ANY window of the period, also across a window boundary
    (a fixed window lets ``2N`` through there). Retry-After = when the oldest hit in the window expires.

    With Redis, every hit goes through a :class:`RateBreaker` over a fail-fast client. When the store fails
    (or its breaker is open) the limiter is *degraded*: per ``serving.rate_limit_on_store_failure`` it counts
    in an in-process moving window (``open``, the default) or raises :class:`RateLimitUnavailable`
    (``closed``). Entering and leaving the degraded state is logged once each.

    Two doors to the same counters: :meth:`hit` (blocking, sync ``redis``: for a worker thread) and
    :meth:`ahit` (awaited in the event loop: ``limits``' asyncio storage over ``redis.asyncio`` with
    hiredis, the same Lua scripts and keys, the same breaker and fallback).
    """

    def __init__(self, settings: Settings) -> None:
        cfg = settings.serving
        self.item = parse(cfg.rate_limit)
        use_redis = cfg.rate_limit_storage == "redis" or (
            cfg.rate_limit_storage == "auto" and settings.feature_store.online_backend == "redis"
        )
        self.backend = "redis" if use_redis else "memory"
        self.on_failure = cfg.rate_limit_on_store_failure
        self.local = MovingWindowRateLimiter(MemoryStorage())
        self.limiter = self.local
        self.breaker: RateBreaker | None = None
        self.async_limiter: AsyncMovingWindowRateLimiter | None = None
        self.degraded = False
        self._lock = threading.Lock()
        if use_redis:
            options = fail_fast_redis_options(cfg.redis_timeout_seconds, cfg.redis_connect_timeout_seconds)
            storage = RedisStorage(
                cfg.redis_url.get_secret_value(), key_prefix=f"{cfg.redis_key_prefix}:ratelimit", **options
            )
            self.limiter = MovingWindowRateLimiter(storage)
            self.async_limiter = AsyncMovingWindowRateLimiter(
                AsyncRedisStorage(
                    f"async+{cfg.redis_url.get_secret_value()}",
                    implementation="redispy",
                    key_prefix=f"{cfg.redis_key_prefix}:ratelimit",
                    **{
                        **options,
                        "retry": AsyncRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
                    },
                )
            )
            self.breaker = RateBreaker(
                cfg.breaker_error_rate,
                cfg.breaker_window_seconds,
                cfg.breaker_min_calls,
                cfg.breaker_reset_seconds,
                name="rate limit store",
                error=RateLimitUnavailable,
                probe=functools.partial(_ping, storage),
            )

    def _hit(self, limiter: MovingWindowRateLimiter, key: str) -> float | None:
        if limiter.hit(self.item, key):
            return None
        reset_at = limiter.get_window_stats(self.item, key).reset_time
        return max(1.0, reset_at - time.time())

    async def _ahit(self, limiter: AsyncMovingWindowRateLimiter, key: str) -> float | None:
        if await limiter.hit(self.item, key):
            return None
        reset_at = (await limiter.get_window_stats(self.item, key)).reset_time
        return max(1.0, reset_at - time.time())

    def _set_degraded(self, degraded: bool, reason: str = "") -> None:
        with self._lock:
            if degraded == self.degraded:
                return
            self.degraded = degraded
        if degraded:
            fallback = (
                "counting per worker in memory (fail-open)"
                if self.on_failure == "open"
                else "answering 503 (fail-closed)"
            )
            log.warning("rate limiter degraded: shared store unavailable (%s); %s", reason, fallback)
        else:
            log.warning("rate limiter recovered: counting in the shared store again")

    def hit(self, customer_id: int) -> float | None:
        """None when allowed, else seconds until the customer's oldest hit leaves the window (Retry-After).

        Raises :class:`RateLimitUnavailable` when the shared store is down and the limiter fails closed.
        """
        key = str(customer_id)
        if self.breaker is None:
            return self._hit(self.limiter, key)
        try:
            retry = self.breaker.call(self._hit, self.limiter, key)
        except StoreUnavailable as exc:
            self._set_degraded(True, str(exc))
            if self.on_failure == "closed":
                raise RateLimitUnavailable(f"rate limiter unavailable: {exc}") from None
            return self._hit(self.local, key)
        if self.degraded:
            self._set_degraded(False)
        return retry

    async def ahit(self, customer_id: int) -> float | None:
        """:meth:`hit` awaited in the event loop: the Redis round trip does not block it (the in-process
        counters, the fallback included, are called directly: they never wait)."""
        key = str(customer_id)
        if self.breaker is None or self.async_limiter is None:
            return self._hit(self.limiter, key)
        try:
            retry = await self.breaker.acall(self._ahit, self.async_limiter, key)
        except StoreUnavailable as exc:
            self._set_degraded(True, str(exc))
            if self.on_failure == "closed":
                raise RateLimitUnavailable(f"rate limiter unavailable: {exc}") from None
            return self._hit(self.local, key)
        if self.degraded:
            self._set_degraded(False)
        return retry


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


class ClientDisconnected(Exception):
    """The client went away before the request's work committed: nothing of it is returned or logged."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"client disconnected (stage: {stage})")
        self.stage = stage


async def client_disconnected(receive: Callable[[], Awaitable[Any]]) -> bool:
    """Wait on the ASGI ``receive`` channel of a request whose body was read: True once the client has
    disconnected; False at once when the server cannot tell (it sent another kind of message)."""
    try:
        message = await receive()
    except Exception:  # a server that cannot tell
        return False
    return isinstance(message, dict) and message.get("type") == "http.disconnect"
