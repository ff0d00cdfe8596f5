"""Scale-out benchmark: the heavy stages on the local engine and on the Dask engine, per world size, in
one run: wall time per stage, peak memory of the run process and of every Dask worker.

    .venv/bin/python -m benchmarks.scale_out --customers 100000 500000 2000000 \
        --engines local dask --workers 2 --worker-memory 4GiB --shards 8 --home /data/scale_out

For every size, the world is prepared once under ``<home>/<customers>/`` (simulated history through the
main job, a quick LightGBM champion (``modeling.reference``), and the landing files of one production
week) and reused by later runs: with the local engine in this process, or with ``--prepare-engine dask`` on
the cluster (the history simulated as customer shards, the main job on the Dask engine, the champion's
training set per shard and its LightGBM data-parallel) for a world larger than this process can hold.
Then, for each engine in ``--engines`` (``local``: every stage in this process; ``dask``: a ``local:N``
LocalCluster of ``--workers`` processes of ``--worker-memory`` each, or ``--scheduler tcp://...``), the
stages run one after the other with **the code the Dagster assets call** (``compute.engine``):

* ``ingest`` — the production week's landing files of every raw table, validated by the pandera contracts
  and stored (``compute.engine.ingest_raw``; the week's partitions are replaced, so every engine does the
  same work);
* ``features`` — the week's feature snapshot into the offline store (``compute.engine.materialize_features``);
* ``training_set`` — the point-in-time training set of the history (``compute.engine.build_training_set``,
  into ``<home>/<customers>/bench-<engine>/``: one file, or one file per customer shard);
* ``lightgbm_fit`` — LightGBM on the train split (``--lgbm-rounds`` rounds): ``LGBMClassifier`` with every
  core of the box (local) or ``DaskLGBMClassifier`` on the shards (dask), with its test AUC;
* ``optuna_trials`` — ``--trials`` Optuna trials on the ``modeling.sample_rows`` sample (local: in this
  process; dask: as cluster tasks), against a SQLite study under the home (0 = skipped);
* ``batch_scores`` — every customer of the week's snapshot scored by the champion
  (``automation.production.score_snapshot`` or its per-shard counterpart);
* ``drift`` — the week's drift statistics against the champion's reference (``monitoring.drift.detect_drift``
  or per shard, merged).

Per stage it prints one JSON line: engine, wall seconds, the run process's peak RSS, each worker's peak
process memory (the scheduler's view, sampled every ``--interval`` s) against the worker limit, and the
1-minute load average at the start and the end; at the end, one table. A figure is only worth recording
from a quiet machine; say the load next to it.
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

from churn_assets.orchestration.demo import usable_cores
from churn_assets.settings import ComputeSettings, ModelingSettings, Settings, SimulationSettings

READY = "scale_out_world.json"


@dataclass
class PeakMemory:
    """Peak memory while a stage runs: the run process's RSS, and (with a Dask client) every worker's
    process memory as the scheduler reports it. Sampled every ``interval`` seconds."""

    client: Any
    interval: float
    peaks: dict[str, int] = field(default_factory=dict)
    driver_peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self) -> None:
        me = psutil.Process()
        while True:
            if self.client is not None:
                for address, info in self.client.scheduler_info(n_workers=-1).get("workers", {}).items():
                    memory = int(info.get("metrics", {}).get("memory", 0))
                    self.peaks[address] = max(self.peaks.get(address, 0), memory)
            self.driver_peak = max(self.driver_peak, me.memory_info().rss)
            if self._stop.wait(self.interval):
                return

    @contextmanager
    def sampling(self) -> Iterator[PeakMemory]:
        thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def prepare_world(settings: Settings) -> dict[str, Any]:
    """Simulate the history and run the main job on it, register a quick champion, and land one production
    week's files (not ingested: the ``ingest`` stage does that), with ``settings``' engine; reused when
    ``<home>/scale_out_world.json`` exists.

    The local engine: one simulated world, the main job and the champion in this process. The Dask engine
    (``--prepare-engine dask``, for a world larger than this process can hold): the history simulated as
    ``compute.shards`` customer shards with per-shard seeds on the cluster (``simulation.sharded``), the
    main job on the Dask engine, the champion's training set built per shard and its LightGBM fitted
    data-parallel (:func:`prepare_champion_on_cluster`)."""
    ready = settings.home / READY
    if ready.exists():
        return dict(json.loads(ready.read_text()))
    started = time.perf_counter()
    if settings.compute.engine == "dask":
        from churn_assets.compute.engine import open_engine

        with open_engine(settings) as engine:
            week, version = prepare_on_cluster(engine)
        prepared_by = f"dask, {settings.compute.shards} shards"
    else:
        week, version = prepare_locally(settings)
        prepared_by = "local"
    info = {
        "week": week,
        "champion": version,
        "prepared_by": prepared_by,
        "prepare_seconds": round(time.perf_counter() - started, 1),
    }
    ready.write_text(json.dumps(info))
    return info


def prepare_locally(settings: Settings) -> tuple[str, str]:
    """One world simulated, run through the main job and given a champion in this process; the landed
    production week and the champion's version."""
    import dagster as dg

    from churn_assets.defs.resources import build_resources
    from churn_assets.modeling.reference import register_champion
    from churn_assets.orchestration import run_pipeline
    from churn_assets.simulation import World

    world = World.create(settings.simulation)
    history = world.simulate_history(settings.landing_dir)
    if not run_pipeline(dg.DagsterInstance.ephemeral(), history, resources=build_resources(settings)).success:
        raise RuntimeError("the main job failed on the history weeks")
    version = register_champion(settings)
    [week] = world.advance(1, settings.landing_dir)
    world.save(settings.world_state_path)
    return week, version


def prepare_on_cluster(engine: Any) -> tuple[str, str]:
    """The world as customer shards simulated on ``engine``'s cluster, the main job on the Dask engine, the
    champion fitted there; the landed production week and the champion's version."""
    import dagster as dg

    from churn_assets.defs.resources import build_resources
    from churn_assets.orchestration import run_pipeline
    from churn_assets.simulation.sharded import ShardedWorld

    settings = engine.settings
    sharded, history = ShardedWorld.simulate_history(
        settings.simulation,
        settings.compute.shards,
        settings.sharded_world_dir,
        settings.landing_dir,
        engine.map_tasks,
    )
    # The main job's steps reach this engine's cluster by its address (no cluster of their own).
    compute = settings.compute.model_copy(update={"scheduler": engine.client.scheduler.address})
    on_cluster = settings.model_copy(update={"compute": compute})
    if not run_pipeline(
        dg.DagsterInstance.ephemeral(), history, resources=build_resources(on_cluster)
    ).success:
        raise RuntimeError("the main job failed on the history weeks (Dask engine)")
    version = prepare_champion_on_cluster(engine)
    _sharded, [week] = sharded.advance(1, settings.landing_dir, engine.map_tasks)
    return week, version


def prepare_champion_on_cluster(engine: Any) -> str:
    """The quick champion of a world prepared on the cluster: the point-in-time training set built per
    shard into the training workdir, the simulator's reference LightGBM parameters fitted data-parallel
    on the workers, registered with its validation metrics (``modeling.reference.register_fitted``)."""
    from churn_assets.compute.engine import build_training_set
    from churn_assets.compute.training import fit_lightgbm_dask, training_shards
    from churn_assets.modeling.reference import register_fitted
    from churn_assets.modeling.training_set import read_split
    from churn_assets.modeling.workdir import TrainingWorkdir
    from churn_assets.simulation.calibration import LGBM_PARAMS
    from churn_assets.storage.warehouse import Warehouse
    from churn_assets.timeline import Timeline

    settings = engine.settings
    workdir = TrainingWorkdir.of(settings)
    with Warehouse.of(settings).connect() as con:
        con.execute(f"SET memory_limit = '{settings.modeling.training_set_memory_limit}'")
        meta = build_training_set(engine, con, Timeline.from_settings(settings.simulation), workdir)
    shards = training_shards(settings, workdir.training_set, meta["sha256"])
    # fit_lightgbm_dask sets the objective, the seed and the logging; each worker uses its own threads
    params = {k: v for k, v in LGBM_PARAMS.items() if k not in ("random_state", "verbose", "n_jobs")}
    model, _rows = fit_lightgbm_dask(engine.client, shards, params, meta["features"], meta["categories"])
    X_val, y_val = read_split(workdir.training_set, "val", meta["features"], meta["categories"])
    return register_fitted(settings, model, meta["sha256"], X_val, y_val)


@dataclass
class Context:
    """One engine's run over one world: what the stages share."""

    engine: Any  # churn_assets.compute.engine.Engine
    week: str
    champion: str
    rounds: int
    trials: int
    out: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.engine.settings  # type: ignore[no-any-return]

    @property
    def client(self) -> Any:
        return self.engine.client

    @property
    def as_of(self) -> dt.date:
        from churn_assets.timeline import Timeline

        day = Timeline.from_settings(self.settings.simulation).snapshot_for_week(
            dt.date.fromisoformat(self.week)
        )
        if day is None:
            raise RuntimeError(f"week {self.week} has no feature snapshot")
        return day

    @property
    def workdir(self) -> Any:
        from churn_assets.modeling.workdir import TrainingWorkdir

        return TrainingWorkdir(self.settings.home / f"bench-{self.settings.compute.engine}")


def stage_ingest(ctx: Context) -> dict[str, Any]:
    from churn_assets.compute.engine import ingest_raw
    from churn_assets.ingestion.contract_files import ContractOptions
    from churn_assets.storage.warehouse import Warehouse
    from data_contracts.raw_tables import RAW_TABLES

    settings = ctx.settings
    rows: dict[str, int] = {}
    with Warehouse.of(settings).connect() as con:
        for table in RAW_TABLES:
            report = ingest_raw(
                ctx.engine,
                con,
                settings.landing_dir,
                table,
                [ctx.week],
                max_reject_share=settings.contracts.max_quarantine_share,
                options=ContractOptions.from_settings(settings),
            )
            rows[table] = report.rows_accepted
    return {"rows_by_table": rows}


def stage_features(ctx: Context) -> dict[str, Any]:
    from churn_assets.compute.engine import materialize_features
    from churn_assets.storage.warehouse import Warehouse

    with Warehouse.of(ctx.settings).connect() as con:
        report = materialize_features(ctx.engine, con, [ctx.as_of])
    return {"rows_by_group": dict(report.rows)}


def stage_training_set(ctx: Context) -> dict[str, Any]:
    from churn_assets.compute.engine import build_training_set
    from churn_assets.storage.warehouse import Warehouse
    from churn_assets.timeline import Timeline

    settings = ctx.settings
    timeline = Timeline.from_settings(settings.simulation)
    with Warehouse.of(settings).connect() as con:
        con.execute(f"SET memory_limit = '{settings.modeling.training_set_memory_limit}'")
        meta = build_training_set(ctx.engine, con, timeline, ctx.workdir)
    ctx.out["meta"] = meta
    return {"rows": meta["rows"], "sha256": meta["sha256"][:12]}


def stage_lightgbm_fit(ctx: Context) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from churn_assets.modeling.training_set import read_split

    meta = ctx.out.get("meta") or ctx.workdir.load_meta()
    path = ctx.workdir.training_set
    params: dict[str, Any] = {
        "n_estimators": ctx.rounds,
        "num_leaves": 63,
        "learning_rate": 0.05,
        "min_child_samples": 100,
    }
    if ctx.client is None:
        import lightgbm as lgb

        X, y = read_split(path, "train", meta["features"], meta["categories"])
        model: Any = lgb.LGBMClassifier(
            objective="binary", random_state=42, verbose=-1, n_jobs=usable_cores(), **params
        )
        model.fit(X, y)
        train_rows = len(y)
        del X, y
    else:
        from churn_assets.compute.training import fit_lightgbm_dask, training_shards

        shards = training_shards(ctx.settings, path, meta["sha256"])
        model, rows = fit_lightgbm_dask(ctx.client, shards, params, meta["features"], meta["categories"])
        train_rows = sum(rows.values())
    X_test, y_test = read_split(path, "test", meta["features"], meta["categories"])
    return {
        "train_rows": train_rows,
        "test_auc": round(float(roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])), 4),
    }


def stage_optuna_trials(ctx: Context) -> dict[str, Any]:
    from churn_assets.modeling.candidate_stage import sample_splits
    from churn_assets.modeling.paths import optuna_storage_url
    from churn_assets.modeling.tuning import tune_lightgbm

    if ctx.trials <= 0:
        return {"skipped": "--trials 0"}
    cfg = ctx.settings.modeling
    splits, _meta = ctx.workdir.load_splits(("train", "val"))
    sample = sample_splits(splits, cfg.sample_rows, cfg.seed)
    runner = None
    if ctx.client is not None:
        from churn_assets.compute.training import run_trials_on_cluster

        runner = lambda job, n: run_trials_on_cluster(ctx.client, job, n)  # noqa: E731
    result = tune_lightgbm(
        sample,
        optuna_storage_url(ctx.settings),
        f"scale-out-{ctx.settings.compute.engine}-{time.time_ns()}",
        ctx.trials,
        cfg.timeout_seconds,
        n_jobs=usable_cores() if ctx.client is None else 1,
        runner=runner,
    )
    return {"trials": result.n_complete + result.n_pruned, "best_val_auc": round(result.best_val_auc, 4)}


def stage_batch_scores(ctx: Context) -> dict[str, Any]:
    from churn_assets.automation.production import snapshot_features
    from churn_assets.compute.scoring import score_week
    from churn_assets.serving.scoring import load_version
    from churn_assets.storage.warehouse import Warehouse

    settings = ctx.settings
    with Warehouse.of(settings).connect() as con:
        features = snapshot_features(con, ctx.as_of)
    result, meta = score_week(
        settings,
        features,
        ctx.as_of,
        phase="none",
        stable_version=ctx.champion,
        candidate_version=None,
        load=lambda version: load_version(settings, version),
        route=lambda _cid: "champion",
        client=ctx.client,
    )
    return {"customers": features.height, "rows": result.frame.height, **meta}


def stage_drift(ctx: Context) -> dict[str, Any]:
    from churn_assets.monitoring.drift import detect_drift, profile_reference
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
    with Warehouse.of(settings).connect() as con:
        current = current_window(con, as_of, features)
    if ctx.client is None:
        report = detect_drift(profile, current, cfg, features=features)
        return {"current_rows": current.height, "n_drifted": len(report.drifted)}
    from churn_assets.compute.drift_stats import drift_on_cluster

    sharded = drift_on_cluster(settings, profile, current, features, client=ctx.client)
    return {
        "current_rows": current.height,
        "n_drifted": len(sharded.report.drifted),
        **{k: v for k, v in sharded.metadata().items() if k != "rows_by_shard"},
    }


STAGES: dict[str, Callable[[Context], dict[str, Any]]] = {
    "ingest": stage_ingest,
    "features": stage_features,
    "training_set": stage_training_set,
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


def size_settings(customers: int, engine: str, args: argparse.Namespace) -> Settings:
    compute = ComputeSettings(
        engine=engine,
        scheduler=args.scheduler or f"local:{args.workers}",
        worker_memory_limit=args.worker_memory,
        threads_per_worker=args.threads,
        shards=args.shards,
    )
    return Settings(
        home=args.home / str(customers),
        simulation=SimulationSettings(n_customers=customers, history_months=args.months),
        modeling=ModelingSettings(n_trials=max(args.trials, 1), **split_periods(args.months)),
        compute=compute,
    )


def run_size(customers: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    from dask.utils import parse_bytes

    from churn_assets.compute.engine import open_engine

    prepare = size_settings(customers, args.prepare_engine, args)
    prepare.home.mkdir(parents=True, exist_ok=True)
    world = prepare_world(prepare)
    print(json.dumps({"customers": customers, "world": world}), flush=True)
    rows: list[dict[str, Any]] = []
    for engine_name in args.engines:
        settings = size_settings(customers, engine_name, args)
        with open_engine(settings) as engine:
            ctx = Context(engine, world["week"], str(world["champion"]), args.lgbm_rounds, args.trials)
            for name in args.stages:
                load_start = os.getloadavg()[0]
                memory = PeakMemory(engine.client, args.interval)
                with memory.sampling():
                    started = time.perf_counter()
                    detail = STAGES[name](ctx)
                    seconds = time.perf_counter() - started
                row = {
                    "customers": customers,
                    "engine": engine.label,
                    "stage": name,
                    "seconds": round(seconds, 2),
                    "workers": engine.workers,
                    "worker_memory_limit_bytes": (
                        parse_bytes(settings.compute.worker_memory_limit) if engine.client else None
                    ),
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
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["local", "dask"],
        choices=["local", "dask"],
        help="Engines, in order.",
    )
    parser.add_argument("--months", type=int, default=18, help="History months of each world.")
    parser.add_argument(
        "--prepare-engine",
        default="local",
        choices=["local", "dask"],
        help="Engine that prepares a new world (dask: sharded simulation, main job and champion on the "
        "cluster, for worlds larger than this process can hold).",
    )
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
    fit = [s for s in ("lightgbm_fit", "optuna_trials") if s in args.stages]
    if fit and "training_set" not in args.stages:
        parser.error(f"--stages: {fit[0]} needs training_set before it")
    summary = [row for customers in args.customers for row in run_size(customers, args)]
    print(
        f"{'customers':>10} {'engine':<18} {'stage':<14} {'seconds':>8} {'run GiB':>8} "
        f"{'worker GiB':>11} {'limit GiB':>10}",
        file=sys.stderr,
    )
    for r in summary:
        limit = r["worker_memory_limit_bytes"]
        print(
            f"{r['customers']:>10} {r['engine'][:18]:<18} {r['stage']:<14} {r['seconds']:>8.1f} "
            f"{r['driver_peak_rss_bytes'] / 2**30:>8.2f} {r['peak_worker_memory_bytes'] / 2**30:>11.2f} "
            f"{(limit or 0) / 2**30:>10.2f}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
