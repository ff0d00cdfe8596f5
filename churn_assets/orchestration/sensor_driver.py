"""Evaluate the code location's sensors in this process, the way the Dagster daemon does, and execute the
runs they request here (``job.execute_in_process``).

The daemon (``dagster-daemon run``) ticks every sensor on its own loop (at least 5 s apart), queues each
requested run and launches it as a fresh process that loads the code location; on two cores that costs
~5 s before a run's first step and the heavy imports again in every run. :class:`SensorDriver` keeps the
same semantics in one long-lived process, for ``churnops demo`` (``automation.demo_driver = in_process``)
and the automation tests:

* one **tick** evaluates every job-targeting sensor against the instance's current state, with its stored
  cursor (``sensor.evaluate_tick``, the daemon's entry point), before any requested run executes -- as
  the daemon's sensors all see the same finished production run;
* the requested runs then execute one at a time in request order (the instance's ``max_concurrent_runs``
  is 1), tagged as the daemon tags them (``dagster/run_key``, ``dagster/sensor_name``); a request whose
  run key already launched a run in the instance is skipped, as the daemon skips it;
* after each run the run-status sensors (the alerts) tick, then the next tick starts; the driver stops
  when a tick requests nothing (:meth:`SensorDriver.settle`).

Cursors are kept in a JSON file (``cursor_path``) so that a resumed demo continues where it stopped; the
daemon's stored cursors are the starting point when the file does not exist yet. What the sensors log
(``context.log``: why a week did or did not trigger) goes to ``log_path`` when given, as the daemon's
goes to its log, instead of the console.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from churn_assets.orchestration.runs import QUIET_CONSOLE
from churn_assets.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Sequence

RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"


@dataclass(frozen=True)
class DrivenRun:
    """One run a sensor requested and the driver executed."""

    sensor: str
    job_name: str
    request: dg.RunRequest
    result: dg.ExecuteInProcessResult
    seconds: float

    @property
    def run_id(self) -> str:
        return self.result.run_id


def daemon_cursors(instance: dg.DagsterInstance) -> dict[str, str | None]:
    """The daemon's stored cursor of every sensor it has ticked (name -> cursor)."""
    return {
        s.instigator_name: getattr(s.instigator_data, "cursor", None)
        for s in instance.all_instigator_state()
        if s.instigator_type.value == "SENSOR"
    }


class SensorDriver:
    """The sensors of ``definitions`` evaluated against ``instance``; their runs executed in process."""

    def __init__(
        self,
        settings: Settings,
        instance: dg.DagsterInstance,
        definitions: dg.Definitions | None = None,
        *,
        cursor_path: Path | None = None,
        log_path: Path | None = None,
        on_run: Callable[[DrivenRun], None] | None = None,
    ) -> None:
        from churn_assets.definitions import build_definitions

        self.settings, self.instance = settings, instance
        self.defs = definitions if definitions is not None else build_definitions(settings)
        running = dg.DefaultSensorStatus.RUNNING  # the daemon ticks the sensors that are running
        sensors: list[dg.SensorDefinition] = [
            s for s in self.defs.sensors or [] if s.default_status == running
        ]
        status = [s for s in sensors if isinstance(s, dg.RunStatusSensorDefinition)]
        self.job_sensors = [s for s in sensors if s.targets and s not in status]
        # The alerts: run-status sensors and sensors without a job, ticked after every run.
        self.alert_sensors = status + [s for s in sensors if not s.targets and s not in status]
        self._started = False
        self.cursor_path = cursor_path
        self.cursors: dict[str, str | None] = daemon_cursors(instance)
        if cursor_path is not None and cursor_path.exists():
            self.cursors |= json.loads(cursor_path.read_text())
        self.on_run = on_run
        self.runs: list[DrivenRun] = []
        self._log_handler: logging.Handler | None = None
        if log_path is not None:  # the sensors' own log lines (what the daemon writes to its log)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_handler = logging.FileHandler(log_path)
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    # ---- one sensor --------------------------------------------------------------------------------
    def _context(self, name: str) -> dg.SensorEvaluationContext:
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            resources={"settings": self.settings},
            sensor_name=name,
            definitions=self.defs,  # resolves partitioned run requests, as the daemon's code location does
        )
        if self._log_handler is not None:  # context.log is a logging.Logger: to the file, not the console
            for handler in list(context.log.handlers):
                context.log.removeHandler(handler)
            context.log.addHandler(self._log_handler)
        return context

    def evaluate(self, sensor: dg.SensorDefinition) -> list[dg.RunRequest]:
        """One tick of ``sensor``: its run requests (the cursor it leaves is stored)."""
        with dg.partition_loading_context(dynamic_partitions_store=self.instance):  # the weeks are dynamic
            data = sensor.evaluate_tick(self._context(sensor.name))
        self.cursors[sensor.name] = data.cursor
        self._save_cursors()
        return list(data.run_requests or [])

    def alert_tick(self) -> None:
        """One tick of every run-status sensor and every sensor without a job (the alerts)."""
        for sensor in self.alert_sensors:
            self.evaluate(sensor)

    def _save_cursors(self) -> None:
        if self.cursor_path is not None:
            self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
            self.cursor_path.write_text(json.dumps(self.cursors, indent=1, sort_keys=True))

    # ---- runs --------------------------------------------------------------------------------------
    def launched(self, run_key: str | None) -> bool:
        """Whether a run with this run key exists in the instance (the daemon then skips the request)."""
        return run_key is not None and bool(
            self.instance.get_run_ids(dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
        )

    def execute(
        self,
        job_name: str,
        request: dg.RunRequest | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        raise_on_error: bool = False,
    ) -> dg.ExecuteInProcessResult:
        """Execute ``job_name`` in process with the request's partition, run config and tags."""
        config: dict[str, Any] = dict(QUIET_CONSOLE)
        if request is not None and request.run_config:
            config |= dict(request.run_config)
        run_tags = {**(request.tags if request is not None else {}), **(tags or {})}
        if request is not None and request.run_key:
            run_tags[RUN_KEY_TAG] = request.run_key
        return self.defs.resolve_job_def(job_name).execute_in_process(
            instance=self.instance,
            run_config=config,
            partition_key=request.partition_key if request is not None else None,
            tags=run_tags,
            raise_on_error=raise_on_error,
        )

    def tick(self) -> list[DrivenRun]:
        """Evaluate every job sensor, then execute the fresh requests one at a time; alerts tick after
        each run. Returns the runs executed."""
        if not self._started:  # a run-status sensor's first tick starts its cursor at the newest event
            self.alert_tick()
            self._started = True
        queued: list[tuple[dg.SensorDefinition, dg.RunRequest]] = []
        for sensor in self.job_sensors:
            queued += [(sensor, request) for request in self.evaluate(sensor)]
        done: list[DrivenRun] = []
        for sensor, request in queued:
            if self.launched(request.run_key):
                continue
            job_name = request.job_name or sensor.targets[0].job_name
            started = time.perf_counter()
            result = self.execute(job_name, request, tags={SENSOR_NAME_TAG: sensor.name})
            run = DrivenRun(sensor.name, job_name, request, result, time.perf_counter() - started)
            done.append(run)
            self.runs.append(run)
            if self.on_run is not None:
                self.on_run(run)
            self.alert_tick()
        return done

    def settle(self, max_ticks: int = 20) -> list[DrivenRun]:
        """Tick until a tick requests no run; returns every run executed."""
        done: list[DrivenRun] = []
        for _ in range(max_ticks):
            runs = self.tick()
            if not runs:
                return done
            done += runs
        raise RuntimeError(f"the sensors still requested runs after {max_ticks} ticks: {self._names(done)}")

    @staticmethod
    def _names(runs: Sequence[DrivenRun]) -> list[str]:
        return [f"{r.job_name} ({r.request.run_key})" for r in runs[-5:]]
