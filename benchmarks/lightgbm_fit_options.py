"""LightGBM options on the full-scale train split: wall / CPU seconds of one fit and its test AUC.

Reads the training set a ``python -m benchmarks.training_full_scale --parts stage`` run left in ``--home``
(as the pipeline reads it: float32, fixed categories) and fits LightGBM once per ``--option`` (a JSON
object of extra LightGBM parameters, ``{}`` = the spec parameters alone: learning rate 0.05, 31
leaves), ``--rounds`` rounds, ``--n-jobs`` threads. The fit is timed in two halves, as
``LGBMClassifier.fit`` runs it: binning the frame into a ``lgb.Dataset``, then boosting. Answers "where does a fit's time go, and what
would a sampling strategy or fewer bins buy" on the machine at hand.

    .venv/bin/python -m benchmarks.lightgbm_fit_options --home .churnops/bench/training_full_scale \\
        --n-jobs 2 --rounds 500 --option '{}' --option '{"data_sample_strategy": "goss"}'
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path(".churnops/bench/training_full_scale"))
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--option", action="append", default=[], help="JSON of extra LightGBM parameters.")
    args = parser.parse_args(argv)

    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    from churn_assets.modeling.workdir import TrainingWorkdir
    from churn_assets.settings import Settings

    started = time.perf_counter()
    splits, _ = TrainingWorkdir.of(Settings(home=args.home)).load_splits(("train", "test"))
    print(
        f"read {len(splits.y_train):,} train / {len(splits.y_test):,} test rows x {len(splits.features)} "
        f"features in {time.perf_counter() - started:.1f} s; n_jobs={args.n_jobs}, rounds={args.rounds}",
        flush=True,
    )
    print(
        "\n| options | construct wall s | boost wall s | fit wall s | fit CPU s | s / round | test AUC | 1-min load after |"
        "\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for option in args.option or ["{}"]:
        extra = json.loads(option)
        params = {
            "objective": "binary",
            "learning_rate": 0.05,
            "num_leaves": 31,
            "num_threads": args.n_jobs,
            "verbose": -1,
            **extra,
        }
        # What LGBMClassifier.fit does, in two timed halves: bin the data into a Dataset, then boost.
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        dataset = lgb.Dataset(splits.X_train, splits.y_train, params=params).construct()
        wall_construct = time.perf_counter() - wall0
        booster = lgb.train(params, dataset, num_boost_round=args.rounds)
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        auc = roc_auc_score(splits.y_test, booster.predict(splits.X_test))
        print(
            f"| `{json.dumps(extra)}` | {wall_construct:.1f} | {wall - wall_construct:.1f} | {wall:.1f} | "
            f"{cpu:.1f} | {(wall - wall_construct) / booster.current_iteration():.3f} | {auc:.4f} | "
            f"{os.getloadavg()[0]:.2f} |",
            flush=True,
        )
        del dataset, booster


if __name__ == "__main__":
    main()
