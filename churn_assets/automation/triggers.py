"""Retraining triggers as plain functions (the Dagster sensors in ``defs/sensors.py`` only feed them).

Each production week ends with two monitoring reports and a label count (asset metadata, see
docs/automation.md). :func:`evaluate_week` turns them into at most one :class:`RetrainRequest`:

* ``performance``: the champion's realised AUC on newly labelled predictions < ``retrain_auc_threshold``
  (0.78); the label-free CBPE estimate counts only with ``retrain_on_estimated_auc``.
* ``drift``: at least ``retrain_min_drifted_features`` (3) features drifted this week.
* ``new_labels``: MORE than ``retrain_new_labelled_rows`` (10,000) labelled rows arrived since the last
  training set was built (retraining on the same labels again could not change anything).
* ``monthly``: the first production week of a simulated month (``simulated_monthly_retrain``); the
  wall-clock monthly schedule uses :func:`monthly_request`.

**Run keys** make one condition trigger one retraining: a condition's key names the trigger and the
state it is about — ``retrain:performance:<champion>`` and ``retrain:drift:<champion>`` (a condition that
persists under the same champion retrains once; a new champion re-arms it), ``retrain:new_labels:
<newest labelled as-of>`` (the next batch of labels re-arms it), ``retrain:monthly:<YYYY-MM>``. Dagster
drops a RunRequest whose run key the sensor already used; :func:`decide` skips such conditions itself
(``used_keys``: any container, e.g. one that asks the Dagster instance), so a spent condition never
masks a fresh one in the same week. :func:`evaluate_week` is the one decision path: the sensor calls it
once per week.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from churn_assets.settings import AutomationSettings

TRIGGER_TAG = "churnops/trigger"
WEEK_TAG = "churnops/week"
CHAMPION_TAG = "churnops/champion_before"
REASON_TAG = "churnops/reason"
ALSO_TAG = "churnops/also_fired"
TRIGGERS = ("performance", "drift", "new_labels", "monthly")


@dataclass(frozen=True)
class Condition:
    """One trigger condition evaluated for a week: fired or not, and why."""

    trigger: str
    fired: bool
    reason: str
    key_part: str  # what the run key is about (champion version, newest labelled as-of, month)


@dataclass(frozen=True)
class RetrainRequest:
    """What a sensor turns into a ``dg.RunRequest`` of the retraining job."""

    trigger: str
    week: str
    reason: str
    run_key: str
    also_fired: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if out != out else out  # NaN -> None


def performance_condition(
    report: Mapping[str, Any] | None, champion: str, cfg: AutomationSettings
) -> Condition:
    """``performance_report`` metadata (``auc`` absent without labels; ``estimated_auc``) -> condition."""
    key = f"performance:{champion}"
    if report is None:
        return Condition("performance", False, "no performance report for this week", key)
    auc = _float(report.get("auc"))
    limit = cfg.retrain_auc_threshold
    if auc is not None:
        fired = auc < limit
        rel = "<" if fired else ">="
        return Condition("performance", fired, f"realised AUC {auc:.3f} {rel} {limit:.2f}", key)
    est = _float(report.get("estimated_auc"))
    if est is None:
        return Condition("performance", False, "no labels and no AUC estimate this week", key)
    fired = cfg.retrain_on_estimated_auc and est < limit
    note = "" if cfg.retrain_on_estimated_auc else " (estimate only, not a trigger)"
    return Condition("performance", fired, f"estimated AUC {est:.3f} vs {limit:.2f}{note}", key)


def drift_condition(report: Mapping[str, Any] | None, champion: str, cfg: AutomationSettings) -> Condition:
    """``drift_report`` metadata (``n_drifted_features``, ``drifted_features``) -> condition."""
    key = f"drift:{champion}"
    if report is None:
        return Condition("drift", False, "no drift report for this week", key)
    n = int(report.get("n_drifted_features") or 0)
    names = report.get("drifted_features") or []
    shown = ", ".join(str(x) for x in list(names)[:5]) if isinstance(names, list | tuple) else str(names)
    need = cfg.retrain_min_drifted_features
    fired = n >= need
    return Condition(
        "drift",
        fired,
        f"{n} drifted feature(s) ({'>=' if fired else '<'} {need}){': ' + shown if n else ''}",
        key,
    )


def labels_condition(status: Mapping[str, Any] | None, cfg: AutomationSettings) -> Condition:
    """``production/label_status`` metadata (``new_labelled_rows``, ``newest_labelled_as_of``) -> condition."""
    if status is None:
        return Condition("new_labels", False, "no label status for this week", "new_labels:none")
    n = int(status.get("new_labelled_rows") or 0)
    newest = str(status.get("newest_labelled_as_of") or "none")
    need = cfg.retrain_new_labelled_rows
    fired = n > need
    return Condition(
        "new_labels",
        fired,
        f"{n:,} labelled rows since the last training ({'>' if fired else '<='} {need:,}; newest {newest})",
        f"new_labels:{newest}",
    )


def monthly_condition(week: str, previous_week: str | None, cfg: AutomationSettings) -> Condition:
    """Simulated-calendar monthly retraining: the week starts a new month compared with the last one."""
    day = dt.date.fromisoformat(week)
    month = f"{day.year:04d}-{day.month:02d}"
    if not cfg.simulated_monthly_retrain:
        return Condition("monthly", False, "simulated monthly retraining off", f"monthly:{month}")
    if previous_week is None:
        return Condition("monthly", False, "first evaluated week", f"monthly:{month}")
    prev = dt.date.fromisoformat(previous_week)
    fired = (prev.year, prev.month) != (day.year, day.month)
    return Condition(
        "monthly", fired, f"first week of {month}" if fired else f"still {month}", f"monthly:{month}"
    )


def decide(
    week: str, champion: str, conditions: list[Condition], used_keys: Container[str] = ()
) -> RetrainRequest | None:
    """At most one request per week: the first fired condition (order = :data:`TRIGGERS`) whose run key
    has not been used yet names the run; the other fired ones are listed in the ``churnops/also_fired``
    tag (one retraining serves them all). A condition whose key was used already (it triggered a
    retraining before under this champion) does not trigger again — but it does not mask a fresh one."""
    fired = [c for c in conditions if c.fired]
    order = {t: i for i, t in enumerate(TRIGGERS)}
    fired.sort(key=lambda c: order.get(c.trigger, len(order)))
    fresh = [c for c in fired if f"retrain:{c.key_part}" not in used_keys]
    if not fresh:
        return None
    first = fresh[0]
    also = tuple(c.trigger for c in fired if c is not first)
    return RetrainRequest(
        trigger=first.trigger,
        week=week,
        reason=first.reason,
        run_key=f"retrain:{first.key_part}",
        also_fired=also,
        tags=request_tags(first.trigger, week, champion, first.reason, also),
    )


def request_tags(
    trigger: str, week: str, champion: str, reason: str, also: tuple[str, ...] = ()
) -> dict[str, str]:
    tags = {
        TRIGGER_TAG: trigger,
        WEEK_TAG: week,
        CHAMPION_TAG: champion,
        REASON_TAG: reason[:200],
    }
    if also:
        tags[ALSO_TAG] = ",".join(also)
    return tags


def evaluate_week(
    week: str,
    previous_week: str | None,
    champion: str,
    *,
    performance: Mapping[str, Any] | None,
    drift: Mapping[str, Any] | None,
    labels: Mapping[str, Any] | None,
    cfg: AutomationSettings,
    used_keys: Container[str] = (),
) -> tuple[RetrainRequest | None, list[Condition]]:
    """Every condition of one week and the resulting request (None: no trigger fired, or only
    conditions whose run key is in ``used_keys``, which is asked only about fired conditions)."""
    conditions = [
        performance_condition(performance, champion, cfg),
        drift_condition(drift, champion, cfg),
        labels_condition(labels, cfg),
        monthly_condition(week, previous_week, cfg),
    ]
    return decide(week, champion, conditions, used_keys), conditions


def monthly_request(month: str, champion: str) -> RetrainRequest:
    """The wall-clock monthly schedule's request (``month`` = ``YYYY-MM`` of the tick)."""
    reason = f"monthly retraining ({month})"
    return RetrainRequest(
        trigger="monthly",
        week=month,
        reason=reason,
        run_key=f"retrain:monthly:{month}",
        tags=request_tags("monthly", month, champion, reason),
    )


def new_production_weeks(keys: list[str], history_end: dt.date, cursor: str | None) -> list[str]:
    """Registered week keys that are production weeks (>= ``history_end``) and newer than ``cursor``."""
    first = history_end.isoformat()
    return sorted(k for k in keys if k >= first and (cursor is None or k > cursor))
