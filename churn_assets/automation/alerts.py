"""Alerts as plain Python: what an alert says, its Slack-compatible payload, its delivery, its ledger.

The Dagster sensors in ``defs/sensors.py`` only find the events (a failed run, a week's failed WARN
checks, a rollback step, an open breaker) and call the builders and :class:`AlertSender` here.

* **Payload**: ``{"text": ..., "blocks": [...]}`` — Slack's incoming-webhook format (``text`` is the
  fallback every receiver shows; ``blocks`` a header, the detail, the week and a link to the Dagster run
  ``{alerts.webserver_base_url}/runs/{run_id}``).
* **Delivery** (:func:`post_json`): an HTTP POST with ``alerts.timeout_seconds``, at most
  ``alerts.max_attempts`` attempts (a timeout, a connection error, a 429 or a 5xx retries after
  ``retry_backoff_seconds``, doubled each time); anything else is a final answer. It never raises: the
  pipeline must not fail because a chat service is down; the result says what happened.
* **Once**: every alert has a key (the event it is about: ``drift:<week>``, ``rollback:<run id>``, ...).
  :class:`AlertLedger` (SQLite under ``home/alerts``) claims the key before the POST and releases it
  when no channel took the alert, so a sensor evaluated again — a daemon restart, a re-run tick, two
  sensors seeing the same run — never sends an alert twice.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from churn_assets.settings import AlertSettings

AlertKind = Literal[
    "drift",
    "auc_below_threshold",
    "estimated_auc_below_threshold",
    "retraining_blocked",
    "rollback",
    "breaker_open",
    "run_failure",
]

# The WARN monitoring checks (check name -> alert kind and title).
CHECK_ALERTS: dict[str, tuple[AlertKind, str]] = {
    "no_material_drift": ("drift", "Material feature drift"),
    "auc_at_or_above_0_78": ("auc_below_threshold", "Champion AUC below threshold"),
    "estimated_auc_at_or_above_0_78": ("estimated_auc_below_threshold", "Estimated AUC below threshold"),
}
BREAKER_STATES = {0: "closed", 1: "half-open", 2: "open"}


@dataclass(frozen=True)
class Alert:
    """One alert: what happened (``kind``, ``title``, ``detail``), for which week, in which Dagster run."""

    kind: AlertKind
    key: str  # the event it is about: the ledger sends each key once
    title: str
    detail: str
    week: str
    run_id: str | None = None
    run_url: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


def run_url(base_url: str, run_id: str) -> str:
    """The Dagster UI page of a run."""
    return f"{base_url.rstrip('/')}/runs/{run_id}"


def _alert(
    kind: AlertKind,
    key: str,
    title: str,
    detail: str,
    week: str | None,
    run_id: str | None,
    base_url: str,
    fields: Mapping[str, Any] | None = None,
) -> Alert:
    return Alert(
        kind=kind,
        key=key,
        title=title,
        detail=detail,
        week=week or "none",
        run_id=run_id,
        run_url=run_url(base_url, run_id) if run_id else None,
        fields={k: str(v) for k, v in (fields or {}).items()},
    )


def check_alert(check_name: str, week: str, run_id: str, description: str, base_url: str) -> Alert | None:
    """A failed WARN monitoring check of ``week`` -> its alert (None for a check that is not one of them)."""
    if check_name not in CHECK_ALERTS:
        return None
    kind, title = CHECK_ALERTS[check_name]
    return _alert(kind, f"{kind}:{week}", title, description, week, run_id, base_url, {"check": check_name})


def retraining_blocked_alert(
    week: str | None, run_id: str, failed_gates: Sequence[tuple[str, str]], base_url: str
) -> Alert:
    """A retraining run stopped by blocking gate checks (``(gate, description)`` pairs)."""
    lines = "; ".join(f"{name}: {text}" for name, text in failed_gates)
    return _alert(
        "retraining_blocked",
        f"retraining_blocked:{run_id}",
        "Retraining blocked by promotion gates",
        f"the challenger failed {len(failed_gates)} gate(s), the champion stays: {lines}",
        week,
        run_id,
        base_url,
        {"gates": ", ".join(name for name, _ in failed_gates)},
    )


def rollback_alert(week: str | None, run_id: str, step: Mapping[str, Any], base_url: str) -> Alert:
    """A ``rollout/step`` that rolled back (its metadata: phase_before, stable_version, reason...)."""
    return _alert(
        "rollback",
        f"rollback:{run_id}",
        "Rollout rolled back",
        f"{step.get('phase_before', '?')} -> {step.get('phase_after', '?')}: champion back to "
        f"v{step.get('stable_version', '?')}; {step.get('reason', '')}",
        week,
        run_id,
        base_url,
        {"stable_version": step.get("stable_version", "?")},
    )


def run_failure_alert(week: str | None, run_id: str, job_name: str, error: str, base_url: str) -> Alert:
    """A failed Dagster run (any job)."""
    return _alert(
        "run_failure",
        f"run_failure:{run_id}",
        f"Run of {job_name} failed",
        error or "see the run's logs",
        week,
        run_id,
        base_url,
        {"job": job_name},
    )


def breaker_alert(
    week: str | None, run_id: str | None, service_url: str, opening: str, base_url: str
) -> Alert:
    """The service's feature-store breaker is open (``opening``: which opening, ``BreakerCursor.key``)."""
    return _alert(
        "breaker_open",
        f"breaker_open:{service_url}:{opening}",
        "Feature-store circuit breaker open",
        f"{service_url}/metrics reports churn_breaker_state 2 (open): the service answers with fallback "
        "scores until the feature store recovers",
        week,
        run_id,
        base_url,
        {"service": service_url},
    )


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack-compatible JSON: ``text`` (the fallback) and ``blocks`` (header, detail, week, run link)."""
    link = f"<{alert.run_url}|Dagster run {alert.run_id[:8]}>" if alert.run_url and alert.run_id else "no run"
    text = f"[churnops] {alert.title} (week {alert.week}): {alert.detail}"
    if alert.run_url:
        text += f" {alert.run_url}"
    context = [f"*week* {alert.week}", link, *(f"*{k}* {v}" for k, v in alert.fields.items())]
    return {
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": f"churnops: {alert.title}"[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": alert.detail[:2900]}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": c} for c in context[:10]]},
        ],
    }


@dataclass(frozen=True)
class Delivery:
    """What one channel did with an alert."""

    channel: str
    delivered: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def post_json(
    url: str,
    payload: Mapping[str, Any],
    *,
    timeout: float,
    max_attempts: int,
    backoff: float,
    channel: str = "webhook",
) -> Delivery:
    """POST ``payload`` as JSON; bounded retry on transport errors, 429 and 5xx. Never raises."""
    import httpx  # imported when an alert is sent, not when the code location loads (~0.1 s)

    status: int | None = None
    error: str | None = None
    pause = backoff
    attempt = 0
    with httpx.Client(timeout=timeout) as client:
        for attempt in range(1, max_attempts + 1):
            try:
                response = client.post(url, json=payload)
                status, error = response.status_code, None
                if response.is_success:
                    return Delivery(channel, True, attempt, status)
                error = f"HTTP {status}: {response.text[:200]}"
                if status != 429 and status < 500:
                    break  # the receiver refused this payload: another attempt gets the same answer
            except httpx.HTTPError as exc:  # timeouts, refused connections, protocol errors
                error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # an alert must never break the pipeline
                error = f"{type(exc).__name__}: {exc}"
                break
            if attempt < max_attempts:
                time.sleep(pause)
                pause *= 2
    return Delivery(channel, False, attempt, status, error)


class AlertLedger:
    """Alert keys already delivered (SQLite ``sent.sqlite`` under ``folder``): the once-only guarantee."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "sent.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        con.execute(
            "CREATE TABLE IF NOT EXISTS sent (key TEXT PRIMARY KEY, kind TEXT, week TEXT, run_id TEXT, "
            "sent_at TEXT)"
        )
        return con

    def claim(self, alert: Alert) -> bool:
        """True when ``alert.key`` was not claimed before (this caller sends it)."""
        with closing(self._connect()) as con, con:
            cur = con.execute(
                "INSERT OR IGNORE INTO sent VALUES (?, ?, ?, ?, ?)",
                (alert.key, alert.kind, alert.week, alert.run_id, dt.datetime.now(dt.UTC).isoformat()),
            )
            return cur.rowcount == 1

    def release(self, alert: Alert) -> None:
        """Forget ``alert.key`` (no channel took it: a later evaluation may try again)."""
        with closing(self._connect()) as con, con:
            con.execute("DELETE FROM sent WHERE key = ?", (alert.key,))

    def keys(self) -> list[str]:
        with closing(self._connect()) as con:
            return [row[0] for row in con.execute("SELECT key FROM sent ORDER BY sent_at")]


# A further channel (e.g. Slack's chat.postMessage through dagster-slack): payload -> None, raises on error.
Channel = tuple[str, Callable[[dict[str, Any]], None]]


@dataclass(frozen=True)
class SendResult:
    """What :meth:`AlertSender.send` did: ``duplicate`` (sent before), or the deliveries per channel."""

    alert: Alert
    duplicate: bool = False
    deliveries: tuple[Delivery, ...] = ()

    @property
    def delivered(self) -> bool:
        return any(d.delivered for d in self.deliveries)

    def summary(self) -> str:
        if self.duplicate:
            return f"{self.alert.key}: sent before"
        if not self.deliveries:
            return f"{self.alert.key}: no alert channel configured"
        return f"{self.alert.key}: " + ", ".join(
            f"{d.channel} {'ok' if d.delivered else 'FAILED'} after {d.attempts} attempt(s)"
            + (f" ({d.error})" if d.error else "")
            for d in self.deliveries
        )


class AlertSender:
    """Sends alerts once each to the webhook (``alerts.webhook_url``) and any further channels."""

    def __init__(self, cfg: AlertSettings, ledger: AlertLedger, channels: Sequence[Channel] = ()) -> None:
        self.cfg, self.ledger, self.channels = cfg, ledger, list(channels)

    @property
    def configured(self) -> bool:
        return self.cfg.webhook_url is not None or bool(self.channels)

    def send(self, alert: Alert) -> SendResult:
        """Deliver ``alert`` unless its key was delivered before. Never raises."""
        if not self.configured:
            return SendResult(alert)
        if not self.ledger.claim(alert):
            return SendResult(alert, duplicate=True)
        payload = slack_payload(alert)
        deliveries: list[Delivery] = []
        if self.cfg.webhook_url is not None:
            deliveries.append(
                post_json(
                    self.cfg.webhook_url.get_secret_value(),
                    payload,
                    timeout=self.cfg.timeout_seconds,
                    max_attempts=self.cfg.max_attempts,
                    backoff=self.cfg.retry_backoff_seconds,
                )
            )
        for name, post in self.channels:
            try:
                post(payload)
                deliveries.append(Delivery(name, True, 1))
            except Exception as exc:  # an alert must never break the pipeline
                deliveries.append(Delivery(name, False, 1, error=f"{type(exc).__name__}: {exc}"))
        result = SendResult(alert, deliveries=tuple(deliveries))
        if not result.delivered:
            self.ledger.release(alert)
        return result


def breaker_state(metrics_text: str) -> int | None:
    """``churn_breaker_state`` from a Prometheus text exposition (the max over workers), or None."""
    from prometheus_client.parser import text_string_to_metric_families

    values = [
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == "churn_breaker_state"
        for sample in family.samples
    ]
    return int(max(values)) if values else None


def read_breaker_state(service_url: str, timeout: float) -> tuple[int | None, str | None]:
    """GET ``{service_url}/metrics`` -> (breaker state or None, error or None). Never raises."""
    import httpx

    try:
        response = httpx.get(f"{service_url.rstrip('/')}/metrics", timeout=timeout)
        response.raise_for_status()
        state = breaker_state(response.text)
    except Exception as exc:  # an unreachable service is reported, not raised
        return None, f"{type(exc).__name__}: {exc}"
    return state, None if state is not None else "no churn_breaker_state in /metrics"


@dataclass(frozen=True)
class BreakerCursor:
    """What the breaker sensor remembers between evaluations: the last state seen, the openings seen so
    far, and when this count started (``epoch``: a reset cursor starts a new count, so its first opening
    gets a new alert key instead of the key of an opening alerted before the reset)."""

    state: int = 0
    opened: int = 0
    epoch: str = ""

    def encode(self) -> str:
        return f"{self.state}:{self.opened}:{self.epoch}"

    @classmethod
    def decode(cls, text: str | None) -> BreakerCursor:
        try:
            state, opened, epoch = (text or "").split(":", 2)
            return cls(int(state), int(opened), epoch)
        except ValueError:
            return cls(epoch=dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%f"))

    @property
    def key(self) -> str:
        """The alert key part of the newest opening."""
        return f"{self.epoch}:{self.opened}"

    def observe(self, state: int) -> tuple[BreakerCursor, bool]:
        """The next cursor after seeing ``state``, and whether this is a new opening (alert)."""
        opening = state == 2 and self.state != 2
        return BreakerCursor(state, self.opened + int(opening), self.epoch), opening
