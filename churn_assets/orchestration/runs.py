"""Run churnops' Dagster jobs from Python (the CLI and tests use this; the UI launches the same jobs).

Runs go to the Dagster instance under ``settings.dagster_home`` (SQLite by default), so that
``make ui`` shows every run the CLI made, with its asset materializations and check results.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import dagster as dg

from churn_assets.defs.jobs import MAIN_JOB, TRAINING_JOB
from churn_assets.defs.partitions import WEEKS
from churn_assets.settings import Settings

# Dagster's console logger prints warnings only; step events still go to the instance (the UI shows
# them) and to ``on_event`` listeners (the CLI prints one line per step start and end from them).
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
REPO_DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"

EventListener = Callable[[dg.EventLogEntry], None]


def prepare_dagster_home(settings: Settings) -> Path:
    """Create DAGSTER_HOME with the project's dagster.yaml and point this process at it."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if REPO_DAGSTER_YAML.exists() and not target.exists():
        shutil.copyfile(REPO_DAGSTER_YAML, target)
    os.environ["DAGSTER_HOME"] = str(home)  # read by Dagster itself, not by churnops
    return home


def instance_for(settings: Settings) -> dg.DagsterInstance:
    prepare_dagster_home(settings)
    return dg.DagsterInstance.get()


def register_weeks(instance: dg.DagsterInstance, week_keys: Sequence[str]) -> list[str]:
    """Add landed weeks as partitions; returns the keys that were new."""
    existing = set(instance.get_dynamic_partitions(WEEKS))
    new = [k for k in week_keys if k not in existing]
    if new:
        instance.add_dynamic_partitions(WEEKS, new)
    return new


def load_definitions() -> dg.Definitions:
    from churn_assets.definitions import defs

    return defs() if callable(defs) else defs


def run_pipeline(
    instance: dg.DagsterInstance,
    week_keys: Sequence[str],
    *,
    definitions: dg.Definitions | None = None,
    resources: dict[str, object] | None = None,
    raise_on_error: bool = False,
    on_event: EventListener | None = None,
) -> dg.ExecuteInProcessResult:
    """Run the main job over the range ``min(week_keys)..max(week_keys)`` as one run.

    ``on_event`` is called with every event of the run right after the instance stores it (step
    started / succeeded / failed ...), in this process, while the run executes."""
    if not week_keys:
        raise ValueError("no landed weeks to process: run `churnops simulate` first")
    register_weeks(instance, week_keys)
    ordered = sorted(week_keys)
    return _execute_job(
        instance,
        MAIN_JOB,
        definitions=definitions,
        resources=resources,
        raise_on_error=raise_on_error,
        on_event=on_event,
        tags={
            "dagster/asset_partition_range_start": ordered[0],
            "dagster/asset_partition_range_end": ordered[-1],
        },
    )


def run_training(
    instance: dg.DagsterInstance,
    *,
    resources: Mapping[str, object] | None = None,
    definitions: dg.Definitions | None = None,
    raise_on_error: bool = False,
    on_event: EventListener | None = None,
) -> dg.ExecuteInProcessResult:
    """Run the ``training`` job (training set -> candidates -> challenger + gates -> champion) as one run;
    ``on_event`` as in :func:`run_pipeline`."""
    return _execute_job(
        instance,
        TRAINING_JOB,
        definitions=definitions,
        resources=resources,
        raise_on_error=raise_on_error,
        on_event=on_event,
        tags={},
    )


def _execute_job(
    instance: dg.DagsterInstance,
    job_name: str,
    *,
    definitions: dg.Definitions | None,
    resources: Mapping[str, object] | None,
    raise_on_error: bool,
    on_event: EventListener | None,
    tags: Mapping[str, str],
) -> dg.ExecuteInProcessResult:
    """Run ``job_name`` of ``definitions`` (default: the code location) in this process, quietly, tagged
    as a CLI run plus ``tags``; ``on_event`` as in :func:`run_pipeline`."""
    job = (definitions or load_definitions()).resolve_job_def(job_name)
    return job.execute_in_process(
        instance=instance,
        resources=resources,
        raise_on_error=raise_on_error,
        run_config=QUIET_CONSOLE,
        run_id=listened_run_id(instance, on_event),
        tags={**tags, "churnops/trigger": "cli"},
    )


def listened_run_id(instance: dg.DagsterInstance, on_event: EventListener | None) -> str | None:
    """A fresh run id with ``on_event`` subscribed to its events (None: Dagster picks the id)."""
    if on_event is None:
        return None
    run_id = str(uuid.uuid4())  # the form of Dagster's own run ids
    instance.add_event_listener(run_id, on_event)
    return run_id
