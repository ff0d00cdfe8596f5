"""Summaries of what a pipeline run did, read back from the Dagster events and the warehouse."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from churn_assets.settings import Settings


@dataclass(frozen=True)
class SummaryRow:
    asset: str
    rows: int | None
    detail: str


@dataclass
class PipelineSummary:
    success: bool
    rows: list[SummaryRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _metadata_value(meta: dict[str, dg.MetadataValue], key: str) -> object:
    value = meta.get(key)
    return getattr(value, "value", value)


def pipeline_summary(settings: Settings, result: dg.ExecuteInProcessResult) -> PipelineSummary:
    """One row per asset (the last partition's metadata: single-run ranges share it) and per check."""
    summary = PipelineSummary(success=result.success)
    job = result.job_def.name
    seen: dict[str, SummaryRow] = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        meta = dict(mat.metadata)
        key = mat.asset_key.to_user_string()
        rows = _metadata_value(meta, "dagster/row_count")
        details = []
        rejected = _metadata_value(meta, "rows_rejected")
        if rejected is not None:
            details.append(f"{rejected:,} quarantined")
        for name in ("weeks", "snapshots", "as_of", "backend", "version", "decision"):
            value = _metadata_value(meta, name)
            if value is not None:
                text = str(value)
                details.append(f"{name}: {text if len(text) < 60 else text[:57] + '...'}")
        seen[key] = SummaryRow(key, int(rows) if isinstance(rows, int | float) else None, "; ".join(details))
    summary.rows = list(seen.values())
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            warn = evaluation.severity == dg.AssetCheckSeverity.WARN  # a warning: nothing was stopped
            summary.notes.append(
                f"[{'yellow' if warn else 'red'}]check {evaluation.asset_key.to_user_string()}:"
                f"{evaluation.check_name} {'warned' if warn else 'failed'}: {evaluation.description}"
            )
    checks = result.get_asset_check_evaluations()
    passed = sum(1 for c in checks if c.passed)
    summary.notes.insert(0, f"{job}: asset checks {passed}/{len(checks)} passed")
    summary.notes.append(f"warehouse: {settings.warehouse_path}")
    return summary


@dataclass(frozen=True)
class StepUpdate:
    """One step event of a running job, for progress output."""

    step: str
    status: str  # "started", "succeeded", "failed", "skipped" or "retrying"
    seconds: float | None = None  # since the step started (None for "started")
    error: str | None = None  # the innermost error message of a failed step, first line


_STEP_STATUS = {
    dg.DagsterEventType.STEP_START: "started",
    dg.DagsterEventType.STEP_SUCCESS: "succeeded",
    dg.DagsterEventType.STEP_FAILURE: "failed",
    dg.DagsterEventType.STEP_SKIPPED: "skipped",
    dg.DagsterEventType.STEP_UP_FOR_RETRY: "retrying",
}


class StepTracker:
    """Turns a run's stored events (``instance.add_event_listener``) into :class:`StepUpdate` s."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def update(self, entry: dg.EventLogEntry) -> StepUpdate | None:
        event = entry.dagster_event
        status = _STEP_STATUS.get(event.event_type) if event is not None else None
        if event is None or status is None or entry.step_key is None:
            return None
        step = entry.step_key
        if status == "started":
            self._started[step] = entry.timestamp
            return StepUpdate(step, status)
        started = self._started.get(step)
        seconds = entry.timestamp - started if started is not None else None
        error = _innermost_message(event.step_failure_data.error) if status == "failed" else None
        return StepUpdate(step, status, seconds, error)


def _innermost_message(error: object) -> str | None:
    """The root cause's message (user code's exception, not Dagster's wrapper), first line."""
    while getattr(error, "cause", None) is not None:
        error = error.cause  # type: ignore[attr-defined]
    message = getattr(error, "message", None)
    return message.strip().splitlines()[0] if message else None
