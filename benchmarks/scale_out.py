"""Scale-out benchmark of the Dask engine: wall time per stage and peak memory per worker, per world size.

    .venv/bin/python -m benchmarks.scale_out --customers 100000 500000 2000000 \
        --workers 4 --worker-memory 4GiB --shards 16 --home /data/scale_out

For every size, the world is prepared once with the local engine under ``<home>/<customers>/`` (simulated
history + one production week through the main job, the training set and a quick LightGBM champion,
``modeling.reference.register_champion``) and reused by later runs. Then, on one cluster (a ``local:N``
LocalCluster with ``--workers`` processes of ``--worker-memory`` each, or ``--scheduler tcp://...``), the
Dask path's stages are timed one after the other:

* ``shard_training_set`` — the training set partitioned by customer shard (``compute/training.py``);
* ``lightgbm_fit`` — ``DaskLGBMClassifier`` on the train shards (``--lgbm-rounds`` rounds), with its
  test AUC;
* ``optuna_trials`` — ``--trials`` Optuna trials as cluster tasks on the ``modeling.sample_rows`` sample,
  against a SQLite study under the home (0 = skipped);
* ``batch_scores`` — every active customer of the production week, one task per shard
  (``compute/scoring.py``);
* ``drift`` — the week's drift statistics per shard, merged (``compute/drift_stats.py``).

Per stage it prints one JSON line: wall seconds, the peak process memory of each worker (the scheduler's
view, sampled every ``--interval`` s) against the worker limit, the driver's peak RSS, and the 1-minute
load average at the start and the end. A figure is only worth recording from a quiet machine; say the
load next to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from churn_assets.settings import ComputeSettings, ModelingSettings, Settings, SimulationSettings

READY = "scale_out_world.json"


@dataclass
class WorkerMemory:
    """Peak process memory of every worker while a stage runs (polls the scheduler's worker metrics)."""

    client: Any
    interval: float
    peaks: dict[str, int] = field(default_factory=dict)
    driver_peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for address, info in self.client.scheduler_info(n_workers=-1).get("workers", {}).items():
                memory = int(info.get("metrics", {}).get("memory", 0))
                self.peaks[address] = max(self.peaks.get(address, 0), memory)
            self.driver_peak = max(self.driver_peak, me.memory_info().rss)
            self._stop.wait(self.interval)

    @contextmanager
    def sampling(self) -> Iterator[WorkerMemory]:
        thread = threading.Thread(target=self._sample, name="worker-memory", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def prepare_world(settings: Settings) -> dict[str, Any]:
    """Simulate history + one production week, run the main job, build the training set, register a quick
    champion (all with the local engine); reused when ``<home>/scale_out_world.json`` exists."""
    ready = settings.home / READY
    if ready.exists():
        return dict(json.loads(ready.read_text()))
    import dagster as dg

    from churn_assets.defs.resources import build_resources
    from churn_assets.modeling.reference import register_champion
    from churn_assets.orchestration import run_pipeline
    from churn_assets.simulation import World

    started = time.perf_counter()
    instance = dg.DagsterInstance.ephemeral()
    world = World.create(settings.simulation)
    history = world.simulate_history(settings.landing_dir)
    if not run_pipeline(instance, history, resources=build_resources(settings)).success:
        raise RuntimeError("the main job failed on the history weeks")
    version = register_champion(settings)
    [week] = world.advance(1, settings.landing_dir)
    world.save(settings.world_state_path)
    if not run_pipeline(instance, [week], resources=build_resources(settings)).success:
        raise RuntimeError(f"the main job failed on production week {week}")
    info = {"week": week, "champion": version, "prepare_seconds": time.perf_counter() - started}
    ready.write_text(json.dumps(info))
    return info


@dataclass
class Context:
    settings: Settings
    client: Any
    week: str
    champion: str
    out: dict[str, Any] = field(default_factory=dict)


def stage_shard_training_set(ctx: Context) -> dict[str, Any]:
    from churn_assets.compute.training import shard_training_set
    from churn_assets.modeling.workdir import TrainingWorkdir

    workdir = TrainingWorkdir.of(ctx.settings)
    root = workdir.root / "shards" / f"benchmark-{ctx.settings.compute.shards}"
    ctx.out["shards"] = shard_training_set(workdir.training_set, root, ctx.settings.compute.shards)
    ctx.out["meta"] = workdir.load_meta()
    return {"train_rows_by_shard": ctx.out["shards"].rows("train")}


def stage_lightgbm_fit(ctx: Context) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from churn_assets.compute.training import fit_lightgbm_dask
    from churn_assets.modeling.training_set import read_split

    meta = ctx.out["meta"]
    params = {
        "n_estimators": ctx.out["rounds"],
        "num_leaves": 63,
        "learning_rate": 0.05,
        "min_child_samples": 100,
    }
    model, rows = fit_lightgbm_dask(
        ctx.client, ctx.out["shards"], params, meta["features"], meta["categories"]
    )
    X_test, y_test = read_split(ctx.out["shards"].root, "test", meta["features"], meta["categories"])
    return {
        "train_rows": sum(rows.values()),
        "test_auc": float(roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])),
    }


def stage_optuna_trials(ctx: Context) -> dict[str, Any]:
    from churn_assets.compute.training import run_trials_on_cluster
    from churn_assets.modeling.candidate_stage import sample_splits
    from churn_assets.modeling.paths import optuna_storage_url
    from churn_assets.modeling.tuning import tune_lightgbm
    from churn_assets.modeling.workdir import TrainingWorkdir

    trials = int(ctx.out["trials"])
    if trials <= 0:
        return {"skipped": "--trials 0"}
    cfg = ctx.settings.modeling
    splits, _meta = TrainingWorkdir.of(ctx.settings).load_splits(("train", "val"))
    sample = sample_splits(splits, cfg.sample_rows, cfg.seed)
    result = tune_lightgbm(
        sample,
        optuna_storage_url(ctx.settings),
        f"scale-out-{time.time_ns()}",
        trials,
        cfg.timeout_seconds,
        runner=lambda job, n: run_trials_on_cluster(ctx.client, job, n),
    )
    return {"trials": result.n_complete + result.n_pruned, "best_val_auc": result.best_val_auc}


def stage_batch_scores(ctx: Context) -> dict[str, Any]:
    from churn_assets.automation.production import snapshot_features
    from churn_assets.compute.scoring import score_snapshot_sharded, staging_folder
    from churn_assets.serving.scoring import load_version
    from churn_assets.storage.warehouse import Warehouse
    from churn_assets.timeline import Timeline

    settings = ctx.settings
    as_of = Timeline.from_settings(settings.simulation).snapshot_for_week(dt.date.fromisoformat(ctx.week))
    if as_of is None:
        raise RuntimeError(f"week {ctx.week} has no feature snapshot")
    with Warehouse(settings.warehouse_path).connect() as con:
        features = snapshot_features(con, as_of)
    result, per_shard = score_snapshot_sharded(
        ctx.client,
        features,
        as_of,
        phase="none",
        stable_version=ctx.champion,
        candidate_version=None,
        load=lambda version: load_version(settings, version),
        route=lambda _cid: "champion",
        shards=settings.compute.shards,
        staging=staging_folder(settings, "benchmark-scores"),
    )
    return {"customers": features.height, "rows": result.frame.height, "customers_by_shard": per_shard}


def stage_drift(ctx: Context) -> dict[str, Any]:
    from churn_assets.compute.drift_stats import detect_drift_sharded
    from churn_assets.compute.scoring import staging_folder
    from churn_assets.monitoring.drift import profile_reference
    from churn_assets.monitoring.sources import current_window, load_champion, reference_frame
    from churn_assets.monitoring.weekly import production_as_of
    from churn_assets.storage.warehouse import Warehouse
    from churn_assets.timeline import Timeline

    settings, cfg = ctx.settings, ctx.settings.monitoring
    as_of = production_as_of(Timeline.from_settings(settings.simulation), dt.date.fromisoformat(ctx.week))
    if as_of is None:
        raise RuntimeError(f"week {ctx.week} is not a production week")
    champion = load_champion(settings)
    reference = reference_frame(settings, champion)
    features = [f for f in champion.features if f in reference.columns]
    profile = profile_reference(reference, [f for f in features if f not in cfg.exclude_features])
    with Warehouse(settings.warehouse_path).connect() as con:
        current = current_window(con, as_of, features)
    started = time.perf_counter()
    sharded = detect_drift_sharded(
        ctx.client,
        profile,
        current,
        cfg,
        features,
        shards=settings.compute.shards,
        staging=staging_folder(settings, "benchmark-drift"),
        sample_rows=settings.compute.drift_ks_sample_rows,
    )
    return {
        "current_rows": current.height,
        "sharded_seconds": time.perf_counter() - started,
        "n_drifted": len(sharded.report.drifted),
        **{k: v for k, v in sharded.metadata().items() if k != "rows_by_shard"},
    }


STAGES: dict[str, Callable[[Context], dict[str, Any]]] = {
    "shard_training_set": stage_shard_training_set,
    "lightgbm_fit": stage_lightgbm_fit,
    "optuna_trials": stage_optuna_trials,
    "batch_scores": stage_batch_scores,
    "drift": stage_drift,
}


def split_periods(months: int) -> dict[str, tuple[int, int]]:
    """The default split for 18 months; a shorter history: the last month test, the one before val."""
    if months == 18:
        return {}
    if months < 3:
        raise ValueError("--months must be at least 3 (train, val and test months)")
    return {
        "train_periods": (1, months - 2),
        "val_periods": (months - 1, months - 1),
        "test_periods": (months, months),
    }


def run_size(customers: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    from dask.utils import parse_bytes

    from churn_assets.compute.cluster import dask_client, worker_count

    compute = ComputeSettings(
        engine="dask",
        scheduler=args.scheduler or f"local:{args.workers}",
        worker_memory_limit=args.worker_memory,
        threads_per_worker=args.threads,
        shards=args.shards,
    )
    settings = Settings(
        home=args.home / str(customers),
        simulation=SimulationSettings(n_customers=customers, history_months=args.months),
        modeling=ModelingSettings(n_trials=max(args.trials, 1), **split_periods(args.months)),
        compute=compute,
    )
    settings.home.mkdir(parents=True, exist_ok=True)
    world = prepare_world(settings)
    rows: list[dict[str, Any]] = []
    with dask_client(compute, storage_root=settings.home) as client:
        ctx = Context(settings, client, world["week"], str(world["champion"]))
        ctx.out.update(rounds=args.lgbm_rounds, trials=args.trials)
        for name in args.stages:
            load_start = os.getloadavg()[0]
            memory = WorkerMemory(client, args.interval)
            with memory.sampling():
                started = time.perf_counter()
                detail = STAGES[name](ctx)
                seconds = time.perf_counter() - started
            row = {
                "customers": customers,
                "stage": name,
                "seconds": round(seconds, 2),
                "workers": worker_count(client),
                "worker_memory_limit_bytes": parse_bytes(compute.worker_memory_limit),
                "peak_worker_memory_bytes": max(memory.peaks.values(), default=0),
                "peak_memory_by_worker": memory.peaks,
                "driver_peak_rss_bytes": memory.driver_peak,
                "load_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
                "detail": detail,
            }
            print(json.dumps(row, default=str), flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, nargs="+", required=True, help="World sizes (customers).")
    parser.add_argument("--home", type=Path, required=True, help="State folder; one sub-folder per size.")
    parser.add_argument("--months", type=int, default=18, help="History months of each world.")
    parser.add_argument("--workers", type=int, default=2, help="Worker processes of the local:N cluster.")
    parser.add_argument("--worker-memory", default="4GiB", help="Memory limit of each worker (Dask syntax).")
    parser.add_argument("--threads", type=int, default=1, help="Threads per worker.")
    parser.add_argument("--shards", type=int, default=8, help="Customer shards (compute.shards).")
    parser.add_argument("--scheduler", default=None, help="A running scheduler (tcp://host:8786) instead.")
    parser.add_argument("--lgbm-rounds", type=int, default=300, help="Boosting rounds of the timed fit.")
    parser.add_argument("--trials", type=int, default=4, help="Optuna trials of the timed study (0: skip).")
    parser.add_argument("--interval", type=float, default=1.0, help="Seconds between memory samples.")
    parser.add_argument(
        "--stages", nargs="+", default=list(STAGES), choices=list(STAGES), help="Stages to time, in order."
    )
    args = parser.parse_args(argv)
    if any(n < 100 for n in args.customers):
        parser.error("--customers: every size must be at least 100")
    if "lightgbm_fit" in args.stages and "shard_training_set" not in args.stages:
        parser.error("--stages: lightgbm_fit needs shard_training_set before it")
    summary = [row for customers in args.customers for row in run_size(customers, args)]
    print(
        f"{'customers':>10} {'stage':<20} {'seconds':>9} {'peak worker GiB':>16} {'limit GiB':>10}",
        file=sys.stderr,
    )
    for r in summary:
        print(
            f"{r['customers']:>10} {r['stage']:<20} {r['seconds']:>9.1f} "
            f"{r['peak_worker_memory_bytes'] / 2**30:>16.2f} {r['worker_memory_limit_bytes'] / 2**30:>10.2f}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
