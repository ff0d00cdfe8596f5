"""The weekly monitoring verdicts behind the WARN asset checks (``churn_assets/defs/monitoring_checks.py``).

Each function reads the metadata a monitoring report stored for a week (the contract in
docs/monitoring.md) and returns a :class:`CheckOutcome`:

* :func:`drift_outcome` (``no_material_drift``): fails when at least ``min_drifted_features``
  (``automation.retrain_min_drifted_features``, 3) features drifted — the count that also triggers a
  retraining and the Prometheus drift alert.
* :func:`auc_outcome` (``auc_at_or_above_0_78``): fails when the realised AUC of the newest labelled
  prediction week is below ``monitoring.auc_threshold`` (0.78).
* :func:`estimated_auc_outcome` (``estimated_auc_at_or_above_0_78``): the same for the week's label-free
  CBPE estimate.

A week without the measurement (a history week, no labelled week yet) passes with ``evaluated`` False
and says why: there is nothing to warn about, and the check must never fail the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CheckOutcome:
    """A check's verdict: passed or not, a one-line description and plain metadata values."""

    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluated(self) -> bool:
        return bool(self.metadata.get("evaluated", True))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return None if math.isnan(out) else out


def _not_evaluated(reason: str, **extra: Any) -> CheckOutcome:
    return CheckOutcome(True, f"not evaluated: {reason}", {"evaluated": False, **extra})


def drift_outcome(report: Mapping[str, Any] | None, min_drifted_features: int) -> CheckOutcome:
    """``monitoring/drift_report`` metadata -> no material drift (fewer than ``min_drifted_features``)."""
    if report is None:
        return _not_evaluated("no drift report for this week")
    if "skipped" in report:
        return _not_evaluated(str(report["skipped"]))
    n = int(report.get("n_drifted_features") or 0)
    names = report.get("drifted_features") or []
    names = [str(x) for x in names] if isinstance(names, list | tuple) else [str(names)]
    passed = n < min_drifted_features
    shown = ", ".join(names[:8]) + ("..." if len(names) > 8 else "")
    description = (
        f"{n} drifted feature(s) {'<' if passed else '>='} {min_drifted_features}"
        + (f": {shown}" if names else "")
        + (f" (max severity {report['max_severity']})" if n and "max_severity" in report else "")
    )
    return CheckOutcome(
        passed,
        description,
        {
            "evaluated": True,
            "n_drifted_features": n,
            "drifted_features": names,
            "min_drifted_features": min_drifted_features,
            "max_severity": str(report.get("max_severity", "NONE")),
            "model_version": str(report.get("model_version", "none")),
        },
    )


def auc_outcome(report: Mapping[str, Any] | None, threshold: float) -> CheckOutcome:
    """``monitoring/performance_report`` metadata -> realised AUC (newest labelled week) >= ``threshold``."""
    if report is None:
        return _not_evaluated("no performance report for this week", threshold=threshold)
    if "skipped" in report:
        return _not_evaluated(str(report["skipped"]), threshold=threshold)
    auc = _number(report.get("auc"))
    if auc is None:
        return _not_evaluated("no prediction week has complete labels yet", threshold=threshold)
    passed = auc >= threshold
    week = report.get("labelled_week", "?")
    version = report.get("labelled_model_version", report.get("model_version", "?"))
    return CheckOutcome(
        passed,
        f"realised AUC {auc:.3f} {'>=' if passed else '<'} {threshold:.2f} "
        f"(prediction week {week}, model v{version}, {int(report.get('labelled_rows') or 0):,} labelled rows)",
        {
            "evaluated": True,
            "auc": auc,
            "threshold": threshold,
            "labelled_week": str(week),
            "model_version": str(version),
        },
    )


def estimated_auc_outcome(report: Mapping[str, Any] | None, threshold: float) -> CheckOutcome:
    """``monitoring/performance_report`` metadata -> CBPE estimated AUC of the week >= ``threshold``."""
    if report is None:
        return _not_evaluated("no performance report for this week", threshold=threshold)
    if "skipped" in report:
        return _not_evaluated(str(report["skipped"]), threshold=threshold)
    est = _number(report.get("estimated_auc"))
    if est is None:
        return _not_evaluated("no AUC estimate this week", threshold=threshold)
    passed = est >= threshold
    return CheckOutcome(
        passed,
        f"estimated AUC (CBPE) {est:.3f} {'>=' if passed else '<'} {threshold:.2f} "
        f"(model v{report.get('model_version', '?')}, {int(report.get('prediction_rows') or 0):,} predictions)",
        {
            "evaluated": True,
            "estimated_auc": est,
            "threshold": threshold,
            "model_version": str(report.get("model_version", "?")),
        },
    )
