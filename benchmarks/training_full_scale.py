"""Full-scale training benchmark: the `training` Dagster job, one LightGBM fit, a 20-trial Optuna study.

Reuses the full-scale world + features in ``--world`` (default ``.churnops/bench/full_scale``; built
once with ``python -m benchmarks.full_scale_pipeline --keep`` when missing — several minutes) and writes all
training state (training set, Optuna, MLflow, registry) to a separate ``--home``
(default ``.churnops/bench/training_full_scale``, wiped first), so the world is never modified.

Each part runs in its own subprocess, so the peak RSS printed is that part's own:

1. ``stage``: the whole training stage as the Dagster ``training`` job in process — training set
   (PIT join) -> tuning (``--trials``) + baselines -> challenger (calibration, SHAP, fairness, slices,
   MLflow, registry) -> 7 blocking gate checks -> champion; per-step seconds from the Dagster events.
2. ``fit``: one LightGBM fit on the FULL train split of that training set (spec params: learning
   rate 0.05, 500 rounds, 31 leaves) with the pipeline's LightGBM training options (quantized
   gradients; ``--exact-gradients`` turns them off in every part), ``--n-jobs`` threads, read as the
   pipeline reads it (float32, fixed categories); ``--max-bin`` / ``--col-wise`` to compare LightGBM
   histogram settings.
3. ``optuna``: a fresh 20-trial study (pruning, SQLite storage, no time budget) as the pipeline runs
   it, on a stratified sample of ``--optuna-rows`` (100,000) train and val rows.

    .venv/bin/python -m benchmarks.training_full_scale                  # everything, 500k customers
    .venv/bin/python -m benchmarks.training_full_scale --parts fit optuna   # reuse the stage's training set

(from the repository root: the parts run as ``python -m benchmarks.training_full_scale --part ...``
children in the same working directory.)

Targets (2-core / 24 GB box): single fit <= 3 min; whole stage <= 10 min; RSS <= 8 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MARK = "@@RESULT@@ "


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far: with n_jobs=1 the wall time a quiet box needs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _settings(args: argparse.Namespace) -> Any:
    from churn_assets.settings import ModelingSettings, Settings, SimulationSettings

    return Settings(
        home=args.home,
        simulation=SimulationSettings(n_customers=args.customers),
        modeling=ModelingSettings(
            n_jobs=args.n_jobs,
            n_trials=args.trials,
            timeout_seconds=args.timeout,
            sample_rows=args.sample_rows,
            lightgbm_quantized_gradients=not args.exact_gradients,
        ),
    )


def part_stage(args: argparse.Namespace) -> dict[str, Any]:
    import dagster as dg

    from churn_assets.defs.resources import build_resources
    from churn_assets.orchestration import run_training

    settings = _settings(args)
    resources = build_resources(settings)
    # The world's warehouse, the benchmark's own training home.
    resources["warehouse"] = build_resources(settings.model_copy(update={"home": args.world}))["warehouse"]
    load_before = load()
    started = time.perf_counter()
    result = run_training(dg.DagsterInstance.ephemeral(), resources=resources)
    seconds = time.perf_counter() - started
    load_after = load()
    steps = {
        e.step_key: e.event_specific_data.duration_ms / 1000  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type_value == "STEP_SUCCESS" and e.step_key
    }
    meta: dict[str, Any] = {}
    for e in result.get_asset_materialization_events():
        meta[e.asset_key.to_user_string() if e.asset_key else "?"] = {
            k: v.value
            for k, v in e.materialization.metadata.items()
            if not k.startswith(("plot", "best_roc"))
        }
    checks = {c.check_name: (c.passed, c.description) for c in result.get_asset_check_evaluations()}
    from churn_assets.modeling.tracking import list_runs

    runs = list_runs(settings)
    return {
        "load_before": load_before,
        "load_after": load_after,
        "cpu_seconds": cpu_seconds(),
        "runs": runs,
        "seconds": seconds,
        "rss_gb": peak_rss_gb(),
        "success": result.success,
        "steps": steps,
        "metadata": meta,
        "checks": checks,
    }


def _splits(args: argparse.Namespace, with_test: bool = True) -> Any:
    from churn_assets.modeling.workdir import TrainingWorkdir

    splits, _ = TrainingWorkdir.of(_settings(args)).load_splits(
        ("train", "val", "test") if with_test else ("train", "val")
    )
    return splits


def part_fit(args: argparse.Namespace) -> dict[str, Any]:
    import lightgbm as lgb
    import numpy as np
    from sklearn.metrics import roc_auc_score

    splits = _splits(args)
    loaded_rss = peak_rss_gb()
    from churn_assets.modeling.candidates import lightgbm_options

    # The pipeline's LightGBM training options (quantized gradients unless --exact-gradients) + max_bin.
    options = lightgbm_options(not args.exact_gradients)  # 6M rows: always above the minimum
    extra: dict[str, Any] = {**options, "max_bin": args.max_bin}
    if args.col_wise:
        extra["force_col_wise"] = True
    model = lgb.LGBMClassifier(
        objective="binary",
        learning_rate=0.05,
        n_estimators=500,
        num_leaves=31,
        n_jobs=args.n_jobs,
        verbose=-1,
        **extra,
    )
    load_before, cpu_before = load(), cpu_seconds()
    started = time.perf_counter()
    model.fit(splits.X_train, splits.y_train)
    seconds = time.perf_counter() - started
    load_after, cpu_after = load(), cpu_seconds()
    started = time.perf_counter()
    p_test = np.asarray(model.predict_proba(splits.X_test))[:, 1]
    predict_seconds = time.perf_counter() - started
    auc = float(roc_auc_score(splits.y_test, p_test))
    return {
        "config": extra,
        "cpu_seconds": cpu_after - cpu_before,
        "load_before": load_before,
        "load_after": load_after,
        "predict_test_seconds": predict_seconds,
        "test_rows": len(splits.y_test),
        "seconds": seconds,
        "rss_gb": peak_rss_gb(),
        "rss_after_load_gb": loaded_rss,
        "train_rows": len(splits.y_train),
        "features": len(splits.features),
        "test_auc": auc,
    }


def part_optuna(args: argparse.Namespace) -> dict[str, Any]:
    from churn_assets.modeling.candidate_stage import sample_splits
    from churn_assets.modeling.candidates import lightgbm_options
    from churn_assets.modeling.tuning import tune_lightgbm

    splits = sample_splits(_splits(args, with_test=False), args.optuna_rows)
    storage = _settings(args).optuna_dir / "optuna_bench.db"
    storage.parent.mkdir(parents=True, exist_ok=True)
    storage.unlink(missing_ok=True)
    load_before, cpu_before = load(), cpu_seconds()
    started = time.perf_counter()
    tuned = tune_lightgbm(
        splits,
        f"sqlite:///{storage}",
        "bench",
        20,
        None,
        n_jobs=args.n_jobs,
        options=lightgbm_options(
            not args.exact_gradients,
            len(splits.y_train),
            _settings(args).modeling.lightgbm_quantized_min_rows,
        ),
    )
    seconds = time.perf_counter() - started
    return {
        "load_before": load_before,
        "load_after": load(),
        "cpu_seconds": cpu_seconds() - cpu_before,
        "seconds": seconds,
        "rss_gb": peak_rss_gb(),
        "complete": tuned.n_complete,
        "pruned": tuned.n_pruned,
        "best_val_auc": tuned.best_val_auc,
        "rows": len(splits.y_train),
    }


def _f(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


PARTS = {"stage": part_stage, "fit": part_fit, "optuna": part_optuna}


def ensure_world(args: argparse.Namespace) -> None:
    if (args.world / "warehouse.duckdb").exists():
        return
    print(
        f"no world at {args.world}: building it once (python -m benchmarks.full_scale_pipeline --keep)",
        flush=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.full_scale_pipeline",
            "--keep",
            "--customers",
            str(args.customers),
            "--home",
            str(args.world),
        ],
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=500_000)
    parser.add_argument("--world", type=Path, default=Path(".churnops/bench/full_scale"))
    parser.add_argument("--home", type=Path, default=Path(".churnops/bench/training_full_scale"))
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--trials", type=int, default=20, help="Optuna trials of the training stage.")
    parser.add_argument("--timeout", type=float, default=300.0, help="Optuna seconds budget of the stage.")
    parser.add_argument("--sample-rows", type=int, default=100_000)
    parser.add_argument("--n-jobs", type=int, default=1, help="Threads per fit (the settings' n_jobs).")
    parser.add_argument("--max-bin", type=int, default=255, help="fit part: LightGBM max_bin.")
    parser.add_argument("--col-wise", action="store_true", help="fit part: LightGBM force_col_wise.")
    parser.add_argument(
        "--exact-gradients",
        action="store_true",
        help="Every part: LightGBM without quantized gradients (modeling.lightgbm_quantized_gradients=false).",
    )
    parser.add_argument(
        "--optuna-rows", type=int, default=100_000, help="Stratified train/val sample of the 20-trial study."
    )
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    args.world, args.home = args.world.resolve(), args.home.resolve()

    if args.part:  # child: run one part, print its JSON result (and keep a copy next to the state)
        result = json.dumps({"part": args.part, **PARTS[args.part](args)}, default=str)
        with (args.home / "bench_results.jsonl").open("a") as f:
            f.write(result + "\n")
        print(MARK + result, flush=True)
        return

    ensure_world(args)
    if "stage" in args.parts and args.home.exists():
        shutil.rmtree(args.home)
    args.home.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for part in args.parts:
        cmd = [sys.executable, "-m", "benchmarks.training_full_scale", "--part", part, *sys.argv[1:]]
        print(f"[{time.strftime('%H:%M:%S')}] {part} ...", flush=True)
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith(MARK)), None)
        if line is None:
            print(out.stdout[-3000:], out.stderr[-5000:], sep="\n")
            raise SystemExit(f"part {part} failed (exit {out.returncode})")
        results[part] = json.loads(line[len(MARK) :])
        if part == "stage" and not results[part]["success"]:
            print(out.stderr[-6000:])
            raise SystemExit("the training job failed: see the Dagster log above")

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
        f"n_jobs={args.n_jobs}"
    )
    print(
        "\n| part | wall s | CPU s | peak RSS (GB) | load avg before -> after | notes |\n|---|---:|---:|---:|---|---|"
    )
    if "stage" in results:
        r = results["stage"]
        ts = r["metadata"].get("training/training_set", {})
        print(
            f"| whole training stage (Dagster `training` job) | {r['seconds']:,.1f} | {r['cpu_seconds']:,.1f} | "
            f"{r['rss_gb']:.2f} | "
            f"{r['load_before']} -> {r['load_after']} | "
            f"success={r['success']}; {ts.get('dagster/row_count', '?'):,} rows; train {ts.get('train_rows')} / "
            f"val {ts.get('val_rows')} / test {ts.get('test_rows')} |"
        )
    if "fit" in results:
        r = results["fit"]
        print(
            f"| one LightGBM fit, full train split | {r['seconds']:,.1f} | {r['cpu_seconds']:,.1f} | "
            f"{r['rss_gb']:.2f} | "
            f"{r['load_before']} -> {r['load_after']} | "
            f"{r['train_rows']:,} rows x {r['features']} features, 500 rounds, {r['config']}; "
            f"test AUC {r['test_auc']:.4f}; predicting {r['test_rows']:,} test rows {r['predict_test_seconds']:.1f} s |"
        )
    if "optuna" in results:
        r = results["optuna"]
        print(
            f"| Optuna study, 20 trials | {r['seconds']:,.1f} | {r['cpu_seconds']:,.1f} | {r['rss_gb']:.2f} | "
            f"{r['load_before']} -> {r['load_after']} | {r['rows']:,} sampled "
            f"train rows; {r['complete']} complete / {r['pruned']} pruned; best val AUC {r['best_val_auc']:.4f} |"
        )
    if "stage" in results:
        r = results["stage"]
        print("\n| Dagster step | seconds |\n|---|---:|")
        for step, seconds in sorted(r["steps"].items(), key=lambda kv: -kv[1]):
            print(f"| {step} | {seconds:,.1f} |")
        cand = r["metadata"].get("training/candidates", {})
        print("\nExperiment table (training/candidates):\n")
        print(cand.get("experiments", "(candidates step did not run)"))
        print(f"\nOptuna: {json.dumps(cand.get('optuna'))}")
        ch = r["metadata"].get("training/challenger", {})
        print(
            f"\nChallenger: {json.dumps({k: ch.get(k) for k in ('version', 'semver', 'best_candidate', 'calibration', 'test_auc', 'train_auc', 'threshold', 'test_recall', 'test_precision', 'test_f1', 'test_brier')})}"
        )
        print("\nGates:")
        for name, (passed, desc) in sorted(r["checks"].items()):
            print(f"- {name}: {'pass' if passed else 'FAIL'} — {desc}")
        from churn_assets.cli.modeling import SHOWN_PARAMS

        print("\n`churnops experiments` (MLflow runs of the stage):\n")
        print(
            "| run | model | params | AUC | recall | F1 | fit time | duration |\n|---|---|---|---:|---:|---:|---:|---:|"
        )
        for run in r["runs"]:
            shown = ", ".join(f"{k}={v}" for k, v in run["params"].items() if k in SHOWN_PARAMS)
            print(
                f"| {run['run_id'][:8]} | {run['model']} | {shown} | {_f(run['auc'])} | {_f(run['recall'])} | "
                f"{_f(run['f1'])} | {_f(run['train_seconds'], 1)} s | {_f(run['duration_seconds'], 1)} s |"
            )
        champ = r["metadata"].get("training/champion")
        print(f"\nChampion step: {json.dumps(champ) if champ else 'not run (a gate failed)'}")


if __name__ == "__main__":
    main()
