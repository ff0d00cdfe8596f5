"""Structured log lines of Dagster runs: the domain's log records carry the run id, the partition (or
partition range) and the step of the Dagster step that wrote them (``churn_assets.structured_logging``)."""

from __future__ import annotations

from typing import Any, TextIO

import dagster as dg

from churn_assets.settings import LoggingSettings
from churn_assets.structured_logging import EventDict, configure_logging


def dagster_step_context(logger: Any, method: str, event: EventDict) -> EventDict:
    """Adds ``run_id``, ``step`` and ``partition`` when the record was written inside a Dagster step."""
    try:
        context = dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return event
    event.setdefault("run_id", context.run_id)
    event.setdefault("step", context.get_step_execution_context().step.key)
    if context.has_partition_key:
        event.setdefault("partition", context.partition_key)
    elif context.has_partition_key_range:
        keys = context.partition_key_range
        event.setdefault("partition", f"{keys.start}...{keys.end}")
    return event


def configure_pipeline_logging(cfg: LoggingSettings, stream: TextIO | None = None) -> None:
    """With ``logging.format = json``, the churnops loggers write JSON lines carrying the Dagster context
    (to ``stream``, default stderr); with ``console`` (the default) Python's logging is left as the process
    set it up."""
    if cfg.format == "json":
        configure_logging(cfg, stream, context=[dagster_step_context])
