"""A bounded loopback load: ``threads`` clients, each sending at most ``rate / threads`` requests per second
until stopped, alternating ``/predict`` (one random known id) and ``/predict_features`` (one explicit row);
every outcome is recorded (start, end, status or transport error, body)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.serving.conftest import N_CUSTOMERS

API_KEY = uuid.uuid4().hex  # the fault-test service's serving.api_key; the load sends it as x-api-key


@dataclass
class Outcome:
    endpoint: str
    start: float  # time.monotonic()
    end: float
    status: int | None  # None: transport error (reset, refused, client timeout)
    body: str
    error: str = ""
    request_id: str = ""  # the service's x-request-id: the prediction log's request_id of its rows

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def scored(self) -> int:
        """Scored items of a 200 (each is one prediction-log row)."""
        if self.status != 200:
            return 0
        return self.body.count('"variant"')


@dataclass
class Load:
    url: str
    feature_row: dict[str, Any]
    rate: float = 60.0
    threads: int = 6
    keepalive: bool = True
    timeout: float = 10.0
    outcomes: list[Outcome] = field(default_factory=list)
    in_flight: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        limits = httpx.Limits(max_keepalive_connections=1 if self.keepalive else 0)
        interval = self.threads / self.rate
        headers = {"x-api-key": API_KEY}
        with httpx.Client(base_url=self.url, timeout=self.timeout, limits=limits, headers=headers) as client:
            k = seed
            while not self._stop.is_set():
                k += 1
                due = time.monotonic() + interval
                if k % 2:
                    endpoint, body = "predict", {"customer_ids": [rng.randint(1, N_CUSTOMERS)]}
                else:
                    endpoint, body = "predict_features", {"rows": [self.feature_row]}
                with self._lock:
                    self.in_flight += 1
                start = time.monotonic()
                try:
                    r = client.post(f"/{endpoint}", json=body)
                    outcome = Outcome(
                        endpoint,
                        start,
                        time.monotonic(),
                        r.status_code,
                        r.text,
                        request_id=r.headers.get("x-request-id", ""),
                    )
                except httpx.HTTPError as exc:
                    outcome = Outcome(
                        endpoint, start, time.monotonic(), None, "", f"{type(exc).__name__}: {exc}"
                    )
                with self._lock:
                    self.in_flight -= 1
                    self.outcomes.append(outcome)
                self._stop.wait(max(0.0, due - time.monotonic()))

    def start(self) -> Load:
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.timeout + 5)
        return sorted(self.outcomes, key=lambda o: o.start)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0
