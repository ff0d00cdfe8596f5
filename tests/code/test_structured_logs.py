"""Structured log lines of a pipeline run and of the domain (``churn_assets.structured_logging``): JSON lines
carry the Dagster run id, partition range and step; console lines stay human-readable."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from churn_assets.defs.logs import configure_pipeline_logging
from churn_assets.settings import LoggingSettings
from churn_assets.structured_logging import LOGGERS, bound_context, configure_logging, customer_id_hasher
from tests.pipeline_helpers import run, simulate, small_settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The churnops loggers as they were (handlers, level, propagation) after the test."""
    saved = [(logging.getLogger(n), list(logging.getLogger(n).handlers)) for n in LOGGERS]
    state = [(lg.level, lg.propagate) for lg, _ in saved]
    yield
    for (logger, handlers), (level, propagate) in zip(saved, state, strict=True):
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.e2e
def test_a_pipeline_runs_domain_lines_carry_run_id_partition_and_step(
    tmp_path: Path, restore_logging: None
) -> None:
    settings = small_settings(tmp_path, customers=300, months=2)
    weeks = simulate(settings)
    out = io.StringIO()
    configure_pipeline_logging(LoggingSettings(format="json"), stream=out)
    instance = dg.DagsterInstance.ephemeral()
    result = run(settings, weeks, instance)
    assert result.success

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines and all({"timestamp", "level", "logger", "event"} <= set(line) for line in lines)
    raw = [line for line in lines if line["logger"] == "churn_assets.ingestion.ingest"]
    features = [line for line in lines if line["logger"] == "churn_assets.feature_store.materialize"]
    assert len(raw) == 6 and features  # one line per raw table, and the offline store's
    for line in raw + features:
        assert line["run_id"] == result.run_id
        assert line["partition"] == f"{min(weeks)}...{max(weeks)}"
    assert {line["step"] for line in raw} == {
        f"raw__{t}" for t in ("accounts", "usage", "engagement", "billing", "support_tickets", "churn_events")
    }
    assert "raw.accounts" in next(line["event"] for line in raw if line["step"] == "raw__accounts")


def test_console_lines_are_human_readable_and_json_lines_carry_bound_context(restore_logging: None) -> None:
    log = logging.getLogger("churn_assets.example")
    console = io.StringIO()
    configure_logging(LoggingSettings(), console)
    with bound_context(request_id="r-1"):
        log.warning("store %s unavailable", "redis")
    assert "store redis unavailable" in console.getvalue() and not console.getvalue().startswith("{")
    assert "request_id=r-1" in console.getvalue()

    as_json = io.StringIO()
    configure_logging(LoggingSettings(format="json", level="WARNING"), as_json)
    log.info("below the level")
    with bound_context(request_id="r-2"):
        log.warning("scored", extra={"fields": {"customers": 3}})
    [line] = [json.loads(x) for x in as_json.getvalue().splitlines()]
    assert line["event"] == "scored" and line["level"] == "warning"
    assert (line["request_id"], line["customers"]) == ("r-2", 3)
    assert "store redis" not in as_json.getvalue()  # the earlier handler was replaced, not added to


def test_customer_id_hashes_depend_on_the_key() -> None:
    keyed = customer_id_hasher(LoggingSettings(customer_id_hash_key="k1"))  # type: ignore[arg-type]
    other = customer_id_hasher(LoggingSettings(customer_id_hash_key="k2"))  # type: ignore[arg-type]
    assert keyed(42) == keyed(42) != other(42)
    assert len(keyed(42) or "") == 16 and keyed(None) is None
    with pytest.raises(ValueError, match="customer_id_hash_key must be 1 to 64 bytes"):
        LoggingSettings(customer_id_hash_key="x" * 65)  # type: ignore[arg-type]
