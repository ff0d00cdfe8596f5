"""`make demo`: history -> champion v1 -> bento -> N production weeks driven by the code location's SENSORS.

The demo process plays the *outside world*: it simulates one production week at a time (landing files)
and registers its partition, exactly what an upstream system would do. What happens next is decided by
the sensors of ``churn_assets.defs.sensors`` -- the weekly production run, the retraining and the rollout
steps -- run by one of two drivers (``automation.demo_driver``, ``churnops demo --driver``):

* ``in_process`` (default): :class:`~churn_assets.orchestration.sensor_driver.SensorDriver` ticks the same
  sensors in this process and executes the runs they request here, one at a time, tagged as the daemon
  tags them. No run pays a process start, a code-location load and the heavy imports again: on 2 cores
  that is what keeps the 16-week story near 15 minutes (docs/automation.md, "Where the time goes").
* ``daemon``: ``dagster-daemon run`` (started here in its own process group on ``workspace.yaml``,
  DAGSTER_HOME = ``settings.dagster_home``) ticks them and launches every run as a queued subprocess --
  the deployment's shape. The demo polls the instance until the week's runs are finished and the
  sensors' cursors reached the week, and stops the daemon by signalling its process group (SIGTERM,
  then SIGKILL after ``daemon_stop_grace_seconds``: Dagster's children may ignore SIGTERM).

Either way the demo then reads what happened back from the instance (run tags, asset metadata), the
registry and the rollout state, and prints one row per week; ``make ui`` shows the same runs.

The live service: before the first production week the demo starts the champion's bento with
``churnops serve`` (its own process group, a free loopback port, ``serving.workers`` workers, an API key
generated for the run) and keeps it up across all weeks; each week's ``production/live_traffic`` asset
replays the week's scoring requests to it (``traffic.*``, :func:`with_live_service`). A newly promoted
champion reaches the running service without a restart (the service loads the version the rollout state
names, ``serving/runtime.py``). The service is stopped after the last week.

Settings reach the daemon, its runs and the service through the environment the demo starts them with
(``daemon_env``: ``CHURNOPS_*``, nested sections as JSON), so every run sees the demo's values (scale,
budgets, rolling split); in this process they are passed as objects (``build_definitions(settings)``).
The demo never changes its own environment.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn_assets.settings import Settings, child_env

if TYPE_CHECKING:
    import dagster as dg

    from churn_assets.orchestration.sensor_driver import DrivenRun

ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = ROOT / "workspace.yaml"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one, else the CPU count)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def demo_settings(settings: Settings) -> Settings:
    """The demo's scenario and budgets (``automation.demo_*``) applied to the simulation, modeling and
    the rollout's business review."""
    auto = settings.automation
    simulation = settings.simulation.model_copy(
        update={
            "label_horizon_days": auto.demo_label_horizon_days,
            "campaign_start_week": auto.demo_campaign_start_week,
            "concept_shift_week": auto.demo_concept_shift_week,
            "concept_shift_ramp_weeks": auto.demo_concept_shift_ramp_weeks,
            "retention_offer_uplift": auto.demo_retention_offer_uplift,
        }
    )
    modeling = settings.modeling.model_copy(
        update={
            "split_mode": auto.demo_split_mode,
            "rolling_window_snapshots": auto.demo_rolling_window_snapshots,
            "n_trials": min(settings.modeling.n_trials, auto.demo_n_trials),
            "n_jobs": auto.demo_n_jobs or usable_cores(),
            "sample_rows": min(settings.modeling.sample_rows, auto.demo_sample_rows),
            "timeout_seconds": min(settings.modeling.timeout_seconds, auto.demo_tuning_seconds),
            "baselines": list(auto.demo_baselines),
            "extra_candidates": list(auto.demo_extra_candidates),
            "gate_max_auc_gap": auto.demo_gate_max_auc_gap,
            "gate_min_recall": auto.demo_gate_min_recall,
            "gate_max_disparity": auto.demo_gate_max_disparity,
        }
    )
    serving = settings.serving.model_copy(update={"rollout_review": auto.demo_rollout_review})
    return settings.model_copy(update={"simulation": simulation, "modeling": modeling, "serving": serving})


def check_world(settings: Settings) -> None:
    """Refuse to continue a world simulated with another scenario (its calendar and labels differ)."""
    from churn_assets.simulation import World

    if not settings.world_state_path.exists():
        return
    world = World.load(settings.world_state_path)
    stored = world.settings
    if stored is not None and stored != settings.simulation:
        diff = {
            k: (getattr(stored, k, None), v)
            for k, v in settings.simulation.model_dump().items()
            if getattr(stored, k, None) != v
        }
        raise SystemExit(
            f"the world under {settings.home} was simulated with other settings {diff} (stored, demo); "
            "run `make clean` or point CHURNOPS_HOME at a fresh folder"
        )


def daemon_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the daemon the demo starts: ``base`` (default: this process's environment)
    without its ``CHURNOPS_*`` variables, plus the demo's settings (``settings_env``) and
    ``DAGSTER_HOME``."""
    env = child_env(settings, os.environ if base is None else base)
    return env | {"DAGSTER_HOME": str(settings.dagster_home)}


def with_live_service(settings: Settings) -> Settings:
    """``settings`` with live traffic on: a free loopback port for ``churnops serve``, the replay aimed at
    it, and an API key (generated when none is configured) both sides share through the environment."""
    from pydantic import SecretStr

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    serving = settings.serving.model_copy(
        update={
            "host": "127.0.0.1",
            "port": port,
            "api_key": settings.serving.api_key or SecretStr(secrets.token_urlsafe(24)),
        }
    )
    traffic = settings.traffic.model_copy(update={"enabled": True, "url": f"http://127.0.0.1:{port}"})
    return settings.model_copy(update={"serving": serving, "traffic": traffic})


@contextlib.contextmanager
def shared_cluster(settings: Settings, out: Callable[[str], None]) -> Iterator[Settings]:
    """``settings`` for the whole demo. With ``compute.engine = dask`` on a ``local:N`` scheduler, one
    ``LocalCluster`` is started for the demo and its address replaces ``local:N``: every run (in this
    process or launched by the daemon) connects to the same warm workers instead of starting its own
    cluster. Otherwise the settings are returned unchanged."""
    compute = settings.compute
    if compute.engine != "dask" or compute.local_workers is None:
        yield settings
        return
    from churn_assets.compute.cluster import local_cluster

    with local_cluster(compute) as cluster:
        out(
            f"Dask cluster for the demo: {cluster.scheduler_address}, {compute.local_workers} workers "
            f"(dashboard {cluster.dashboard_link})"
        )
        shared = compute.model_copy(update={"scheduler": cluster.scheduler_address})
        yield settings.model_copy(update={"compute": shared})


class Daemon:
    """``dagster-daemon run`` (or another command: ``argv``) in its own process group."""

    def __init__(self, settings: Settings, log_path: Path, argv: list[str] | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.argv = argv or [
            str(Path(sys.executable).with_name("dagster-daemon")),
            "run",
            "-w",
            str(WORKSPACE),
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop it and every child together
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the daemon leads its group
        for sig, wait in (
            (signal.SIGTERM, self.settings.automation.daemon_stop_grace_seconds),
            (signal.SIGKILL, 5.0),
        ):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self._group_alive(pgid):
                time.sleep(0.25)
            if not self._group_alive(pgid):
                break
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        # Zombies of the group leader count as gone once reaped by poll().
        return True


@dataclass
class WeekRow:
    number: int
    week: str
    drifted: int | None = None
    drifted_features: list[str] = field(default_factory=list)
    auc: float | None = None
    estimated_auc: float | None = None
    trigger: str = "-"
    action: str = "-"
    phase: str = "none"
    champion: str = "none"
    seconds: float = 0.0
    failed_runs: list[str] = field(default_factory=list)
    live: str = "-"
    live_requests: int = 0
    live_errors: int = 0
    live_versions: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        auc = "-" if self.auc is None else f"{self.auc:.3f}"
        est = "-" if self.estimated_auc is None else f"{self.estimated_auc:.3f}"
        drift = "-" if self.drifted is None else str(self.drifted)
        if self.drifted_features:
            drift += (
                f" ({', '.join(self.drifted_features[:3])}{'...' if len(self.drifted_features) > 3 else ''})"
            )
        return [
            str(self.number),
            self.week,
            self.live,
            drift,
            f"{auc} / {est}",
            self.trigger,
            self.action + (f" [FAILED: {', '.join(self.failed_runs)}]" if self.failed_runs else ""),
            self.phase,
            self.champion,
            f"{self.seconds:.0f}",
        ]


HEADERS = [
    "#",
    "week",
    "live traffic (requests @ rate, P95, errors; versions)",
    "drifted features",
    "AUC / est. AUC",
    "trigger",
    "action",
    "rollout",
    "champion",
    "s",
]


def live_cell(meta: dict[str, Any]) -> str:
    """The table's live-traffic cell from ``production/live_traffic`` metadata."""
    requests = meta.get("requests")
    if not isinstance(requests, int) or requests == 0:
        return "batch only"
    p95 = meta.get("latency_p95_ms")
    rate = meta.get("requests_per_second")
    versions = sorted({str(k).split(" ")[-1] for k in (meta.get("by_variant") or {})})
    return (
        f"{requests} @ {rate:.0f}/s, P95 {p95:.1f} ms, {meta.get('errors', '?')} err"
        if isinstance(p95, float) and isinstance(rate, float)
        else f"{requests} requests, {meta.get('errors', '?')} err"
    ) + (f"; {', '.join(versions)}" if versions else "")


def _runs_since(instance: dg.DagsterInstance, since: float) -> list[Any]:
    import dagster as dg

    return list(instance.get_run_records(dg.RunsFilter(created_after=_utc(since))))


def _utc(ts: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC)


def wait_for_week(
    instance: dg.DagsterInstance, week: str, since: float, settings: Settings, daemon: Daemon
) -> list[Any]:
    """Block until the week is fully handled: its production run finished, the retrain and rollout
    sensors have evaluated it (their cursors reached the week) and no run is queued or running.
    If the production run failed (the sensors never see the week's reports) the week ends after
    ``demo_idle_seconds`` without runs. Returns the run records created since ``since``."""
    from dagster import DagsterRunStatus

    from churn_assets.defs.jobs import PRODUCTION_JOB
    from churn_assets.orchestration.sensor_driver import daemon_cursors

    cfg = settings.automation
    finished = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + cfg.demo_week_timeout_seconds
    idle_since: float | None = None
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise RuntimeError(f"the Dagster daemon exited (see {daemon.log_path})")
        records = _runs_since(instance, since)
        production = [
            r
            for r in records
            if r.dagster_run.job_name == PRODUCTION_JOB
            and r.dagster_run.tags.get("dagster/partition") == week
        ]
        busy = any(r.dagster_run.status not in finished for r in records)
        done = bool(production) and all(r.dagster_run.status in finished for r in production)
        if done and not busy:
            cursors = daemon_cursors(instance)
            if all((cursors.get(name) or "") >= week for name in ("retrain_sensor", "rollout_sensor")):
                return records
            failed = any(r.dagster_run.status != DagsterRunStatus.SUCCESS for r in production)
            idle_since = idle_since or time.monotonic()
            if failed and time.monotonic() - idle_since >= cfg.demo_idle_seconds:
                return records
        else:
            idle_since = None
        time.sleep(0.5)
    raise TimeoutError(f"week {week}: runs not finished after {cfg.demo_week_timeout_seconds:.0f} s")


def _meta_for_run(instance: dg.DagsterInstance, key: dg.AssetKey, run_id: str) -> dict[str, Any] | None:
    import dagster as dg

    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=20).records
    for record in records:
        if record.run_id == run_id and record.asset_materialization is not None:
            return {k: v.value for k, v in record.asset_materialization.metadata.items()}
    return None


def collect_row(
    instance: dg.DagsterInstance,
    number: int,
    week: str,
    records: list[Any],
    settings: Settings,
    seconds: float,
) -> WeekRow:
    """Read what happened in a week back from the instance, the registry and the rollout state."""
    import dagster as dg

    from churn_assets.defs.jobs import RETRAINING_JOB, ROLLOUT_STEP_JOB
    from churn_assets.defs.keys import (
        CHALLENGER,
        CHAMPION,
        DRIFT_REPORT,
        LIVE_TRAFFIC,
        PERFORMANCE_REPORT,
        ROLLOUT_START,
        ROLLOUT_STEP,
    )
    from churn_assets.defs.sensors import metadata_of
    from churn_assets.modeling.registry import ModelRegistry
    from churn_assets.serving.rollout import RolloutStore

    row = WeekRow(number, week, seconds=seconds)
    live = metadata_of(instance, LIVE_TRAFFIC, week)
    if live:
        row.live = live_cell(live[0])
        requests, errors = live[0].get("requests"), live[0].get("errors")
        row.live_requests = requests if isinstance(requests, int) else 0
        row.live_errors = errors if isinstance(errors, int) else 0
        row.live_versions = sorted({str(k).split(" ")[-1] for k in (live[0].get("by_variant") or {})})
    drift = metadata_of(instance, DRIFT_REPORT, week)
    if drift:
        row.drifted = int(drift[0].get("n_drifted_features") or 0)
        names = drift[0].get("drifted_features") or []
        row.drifted_features = [str(n) for n in names] if isinstance(names, list) else []
    perf = metadata_of(instance, PERFORMANCE_REPORT, week)
    if perf:
        auc, est = perf[0].get("auc"), perf[0].get("estimated_auc")
        row.auc = float(auc) if isinstance(auc, int | float) else None
        row.estimated_auc = float(est) if isinstance(est, int | float) else None
    triggers, actions = [], []
    for record in sorted(records, key=lambda r: r.create_timestamp):
        run = record.dagster_run
        if run.status == dg.DagsterRunStatus.FAILURE:
            row.failed_runs.append(f"{run.job_name} {run.run_id[:8]}")
        if run.job_name == RETRAINING_JOB:
            triggers.append(run.tags.get("churnops/trigger", "?"))
            decision = _meta_for_run(instance, CHAMPION, run.run_id)
            start = _meta_for_run(instance, ROLLOUT_START, run.run_id)
            if decision:
                theirs = decision.get("champion_auc_same_holdout")
                auc = decision.get("challenger_auc")
                actions.append(
                    f"retrain v{decision.get('challenger_version')}: {decision.get('decision')}"
                    + (
                        f" (AUC {auc:.3f} vs {theirs:.3f})"
                        if isinstance(auc, float) and isinstance(theirs, float)
                        else ""
                    )
                )
            elif run.status == dg.DagsterRunStatus.FAILURE:
                challenger = _meta_for_run(instance, CHALLENGER, run.run_id)
                if challenger is not None:  # the gates (blocking checks) stopped the promotion
                    row.failed_runs.remove(f"{run.job_name} {run.run_id[:8]}")
                    actions.append(f"retrain v{challenger.get('version')}: blocked by gates (audit log)")
                else:
                    actions.append("retrain failed")
            if start and str(start.get("action", "")).startswith(("rollout", "deployed")):
                actions.append(str(start["action"]).split(" (")[0])
        elif run.job_name == ROLLOUT_STEP_JOB:
            step = _meta_for_run(instance, ROLLOUT_STEP, run.run_id)
            if step:
                actions.append(f"rollout {step['action']}: {step['phase_before']} -> {step['phase_after']}")
    row.trigger = ", ".join(triggers) or "-"
    row.action = "; ".join(actions) or "-"
    state = RolloutStore(settings).load()
    row.phase = state.phase if not state.active else f"{state.phase} (v{state.candidate_version})"
    row.champion = ModelRegistry(settings).aliases().get("champion", "none")
    return row


def live_summary(rows: list[WeekRow]) -> str:
    """One line: the live traffic over all weeks, failed requests, and the model versions that answered
    (a new champion reaching the running service shows as a new version, without failed requests)."""
    live = [r for r in rows if r.live_requests]
    if not live:
        return "live service: no traffic replayed (batch scoring only)"
    changes = [
        f"week {r.number}: {', '.join(r.live_versions)}"
        for prev, r in zip([None, *live], live, strict=False)
        if prev is None or r.live_versions != prev.live_versions
    ]
    return (
        f"live service: {sum(r.live_requests for r in live):,} requests in {len(live)} weeks, "
        f"{sum(r.live_errors for r in live)} failed, one service process throughout; versions answering: "
        + "; ".join(changes)
    )


def bootstrap(settings: Settings, out: Callable[[str], None]) -> None:
    """Champion v1 + bento + first deployment: the retraining job, run once in process (trigger=bootstrap)."""
    from churn_assets.definitions import build_definitions
    from churn_assets.defs.jobs import RETRAINING_JOB
    from churn_assets.modeling.registry import ModelRegistry
    from churn_assets.orchestration import QUIET_CONSOLE, instance_for

    if ModelRegistry(settings).aliases().get("champion"):
        out("champion exists: skipping the initial training")
        return
    started = time.perf_counter()
    job = build_definitions(settings).resolve_job_def(RETRAINING_JOB)
    result = job.execute_in_process(
        instance=instance_for(settings),
        run_config=QUIET_CONSOLE,
        tags={"churnops/trigger": "bootstrap"},
        raise_on_error=False,
    )
    if not result.success:
        raise RuntimeError("initial training failed: see the Dagster UI (make ui), job retraining")
    aliases = ModelRegistry(settings).aliases()
    out(
        f"champion v{aliases.get('champion')} trained, bento built, deployed ({time.perf_counter() - started:.0f} s)"
    )


def flagged_last_week(settings: Settings, world: Any) -> list[int]:
    """The customers the serving models flagged (label 1, the prediction a customer got: variant champion
    or canary, live or batch) in the newest production week the world has simulated."""
    import datetime as dt

    import polars as pl

    from churn_assets.serving.prediction_log import read_snapshots

    as_of = world.timeline.snapshot_for_week(world.current_date - dt.timedelta(days=7))
    if as_of is None:
        return []
    rows = read_snapshots(settings, [as_of]).filter(
        pl.col("variant").is_in(["champion", "canary"]) & (pl.col("label") == 1)
    )
    return [int(i) for i in rows.get_column("customer_id").unique().to_list()]


def simulate_week(settings: Settings) -> str:
    """One more production week of the outside world: the business sends retention offers to the
    customers flagged last week (when ``simulation.retention_offer_uplift`` > 0), then the week is
    simulated, landed and its partition registered."""
    from churn_assets.orchestration import instance_for, register_weeks
    from churn_assets.simulation import World

    world = World.load(settings.world_state_path)
    if settings.simulation.retention_offer_uplift > 0:
        world.send_offers(flagged_last_week(settings, world))
    [key] = world.advance(1, settings.landing_dir)
    world.save(settings.world_state_path)
    register_weeks(instance_for(settings), [key])
    return key


def start_live_service(settings: Settings, out: Callable[[str], None]) -> Daemon:
    """``churnops serve`` in its own process group, up once ``/ready`` answers."""
    from churn_assets.serving.traffic import live_url, service_ready

    churnops = str(Path(sys.executable).with_name("churnops"))
    service = Daemon(settings, settings.logs_dir / "live-service.log", [churnops, "serve"])
    service.start(daemon_env(settings))
    if not service_ready(settings, timeout=settings.automation.demo_service_start_seconds):
        service.stop()
        raise RuntimeError(f"the live service did not answer /ready (see {service.log_path})")
    out(
        f"live service up at {live_url(settings)} (churnops serve, pid {service.proc.pid if service.proc else '?'})"
    )
    return service


def run_weeks(settings: Settings, weeks: int, out: Callable[[str], None]) -> list[WeekRow]:
    """Play ``weeks`` production weeks with the live service up; one row per week. The sensors run in
    this process (``automation.demo_driver = in_process``, :class:`SensorDriver`) or in a
    ``dagster-daemon`` the demo starts and stops (``daemon``)."""
    service = start_live_service(settings, out) if settings.traffic.enabled else None
    try:
        if settings.automation.demo_driver == "daemon":
            return _weeks_with_daemon(settings, weeks, out)
        return _weeks_in_process(settings, weeks, out)
    finally:
        if service is not None:
            service.stop()
            out("live service stopped")


def _run_line(run: DrivenRun) -> str:
    trigger = run.request.tags.get("churnops/trigger", "?")
    status = "ok" if run.result.success else "FAILED"
    return f"  {run.job_name} (trigger {trigger}, run {run.run_id[:8]}): {status}, {run.seconds:.0f} s"


def _weeks_in_process(settings: Settings, weeks: int, out: Callable[[str], None]) -> list[WeekRow]:
    import dagster as dg

    from churn_assets.definitions import build_definitions
    from churn_assets.orchestration import instance_for
    from churn_assets.orchestration.sensor_driver import SensorDriver

    instance = instance_for(settings)
    driver = SensorDriver(
        settings,
        instance,
        build_definitions(settings),
        cursor_path=settings.home / "demo" / "sensor_cursors.json",
        log_path=settings.logs_dir / "sensor-ticks.log",
        on_run=lambda run: out(_run_line(run)),
    )
    out(
        "sensors evaluated in this process ("
        + ", ".join(s.name for s in driver.job_sensors)
        + f"); their runs execute here, recorded in the Dagster instance; sensor log {settings.logs_dir / 'sensor-ticks.log'}"
    )

    def week_runs(week: str, started: float) -> list[Any]:
        ran = [run.run_id for run in driver.settle()]  # this week's runs (they follow each other closely)
        return list(instance.get_run_records(dg.RunsFilter(run_ids=ran))) if ran else []

    return _play_weeks(settings, instance, weeks, out, week_runs)


def _weeks_with_daemon(settings: Settings, weeks: int, out: Callable[[str], None]) -> list[WeekRow]:
    from churn_assets.orchestration import instance_for

    instance = instance_for(settings)
    daemon = Daemon(settings, settings.logs_dir / "dagster-daemon.log")
    daemon.start(daemon_env(settings))
    out(f"dagster-daemon started (pid {daemon.proc.pid if daemon.proc else '?'}, log {daemon.log_path})")
    try:
        return _play_weeks(
            settings,
            instance,
            weeks,
            out,
            lambda week, started: wait_for_week(instance, week, started - 1, settings, daemon),
        )
    finally:
        daemon.stop()
        out("dagster-daemon stopped")


def _play_weeks(
    settings: Settings,
    instance: dg.DagsterInstance,
    weeks: int,
    out: Callable[[str], None],
    week_runs: Callable[[str, float], list[Any]],
) -> list[WeekRow]:
    """Simulate ``weeks`` weeks one at a time; ``week_runs(week, started)`` returns the run records the
    sensors made of each (once they are finished); one row per week, printed as it ends."""
    rows: list[WeekRow] = []
    for number in range(1, weeks + 1):
        started = time.time()
        week = simulate_week(settings)
        records = week_runs(week, started)
        row = collect_row(instance, number, week, records, settings, time.time() - started)
        rows.append(row)
        out(" | ".join(row.cells()))
    return rows


def ab_results(settings: Settings) -> list[str]:
    """The A/B test of business impact of every rollout that had canary traffic: canary vs control
    realised churn (``automation.rollout_checks.business_impact``) on its canary weeks whose label window
    has closed by now."""
    from churn_assets.automation.production import realised_outcomes
    from churn_assets.automation.rollout_checks import business_impact
    from churn_assets.serving.prediction_log import read_predictions
    from churn_assets.serving.rollout import RolloutStore
    from churn_assets.storage.warehouse import Warehouse
    from churn_assets.timeline import Timeline

    pairs = list(
        dict.fromkeys(
            (str(h["candidate_version"]), str(h["stable_version"]))
            for h in RolloutStore(settings).load().history
            if h.get("action") == "start" and h.get("candidate_version")
        )
    )
    if not pairs:
        return []
    log = read_predictions(settings)
    lines = []
    for candidate, stable in pairs:
        canary = log.filter((log["variant"] == "canary") & (log["model_version"] == candidate))
        if canary.is_empty():
            continue
        with Warehouse.of(settings).connect(read_only=True) as con:
            outcomes = realised_outcomes(
                con,
                Timeline.from_settings(settings.simulation),
                7 * settings.simulation.label_delay_weeks,
                canary.get_column("as_of").unique().to_list(),
            )
        impact = business_impact(log, stable, candidate, outcomes)
        lines.append(
            f"A/B business impact, rollout of v{candidate} (canary) vs v{stable} (control): {impact.note}"
        )
    return lines


def final_report(settings: Settings) -> str:
    """The final MLOps status report (``churnops status``) plus the rollout state and the registry's
    recent decisions."""
    from churn_assets.modeling.registry import ModelRegistry
    from churn_assets.monitoring.status import build_status_report, render_status
    from churn_assets.serving.rollout import RolloutStore

    state = RolloutStore(settings).load()
    audit = ModelRegistry(settings).read_audit()
    try:
        status = render_status(build_status_report(settings))
    except Exception as exc:  # the report reads several stores; show the rest even if one fails
        status = f"(status report failed: {type(exc).__name__}: {exc})"
    lines = [
        status,
        f"Rollout: phase {state.phase}, stable v{state.stable_version}, candidate "
        f"{'v' + state.candidate_version if state.candidate_version else '-'}",
        "Registry decisions: "
        + ", ".join(f"{e.action} v{e.version}" + (f" ({e.actor})" if e.actor else "") for e in audit[-10:]),
    ]
    try:
        lines += ab_results(settings)
    except Exception as exc:  # like the status report: show the rest if a store cannot be read
        lines.append(f"(A/B results failed: {type(exc).__name__}: {exc})")
    return "\n".join(lines)
