"""Calibration of the simulator: churn labels, a reference LightGBM, and the production story.

``python -m churn_assets.simulation.calibration --n-customers 20000`` simulates history plus the
production scenario in a temporary folder and prints the figures quoted in docs/simulation.md:
the 90-day churn rate at each monthly snapshot, the time-based history AUC (train snapshots 1-12,
test 16-18), the AUC of the model frozen at production start per production week, the AUC of a
model retrained on production snapshots, and the KS drift of ``invoice_amount``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from churn_assets.feature_store.definitions import ENTITY, EVENT_TIMESTAMP, FEATURE_GROUPS, all_features
from churn_assets.feature_store.transforms import compute_snapshots, load_landing_into_duckdb
from churn_assets.settings import SimulationSettings
from churn_assets.simulation.churn_model import ChurnModel
from churn_assets.simulation.world import World
from churn_assets.timeline import Timeline

LABEL = "churned_90d"
LGBM_PARAMS: dict[str, object] = {
    "n_estimators": 300,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 100,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "n_jobs": 1,  # robust on a shared 2-core machine (OpenMP spinning under contention)
    "force_col_wise": True,
    "verbose": -1,
    "random_state": 0,
}
FEATURES = [f.name for f in all_features()]
CATEGORICAL = [f.name for f in all_features() if f.dtype == "string"]


def labelled_frame(
    con: duckdb.DuckDBPyConnection, as_of_dates: list[dt.date], horizon_days: int = 90
) -> pd.DataFrame:
    """All 45 features at each as-of date plus the label: cancelled before ``as_of + horizon``.

    The label uses every churn event in ``raw.churn_events`` (also those landing after the as-of
    date); cancellations before the as-of date that were not yet reported count as churn.
    """
    snaps = compute_snapshots(con, as_of_dates)
    keys = [ENTITY, EVENT_TIMESTAMP]
    frame = snaps[FEATURE_GROUPS[0].name].to_pandas()
    for group in FEATURE_GROUPS[1:]:
        table: pa.Table = snaps[group.name]
        frame = frame.merge(table.to_pandas(), on=keys, how="inner", validate="one_to_one")
    churn = con.execute("SELECT customer_id, cancellation_date FROM raw.churn_events").df()
    frame = frame.merge(churn, on=ENTITY, how="left")
    cancel = pd.to_datetime(frame.pop("cancellation_date"))
    frame[LABEL] = (cancel < frame[EVENT_TIMESTAMP] + pd.Timedelta(days=horizon_days)).astype(np.int64)
    for col in CATEGORICAL:
        frame[col] = frame[col].astype("category")
    return frame


def fit(frame: pd.DataFrame) -> object:
    """A LightGBM classifier with the reference parameters on the 45 features."""
    import lightgbm as lgb

    model = lgb.LGBMClassifier(**LGBM_PARAMS)  # type: ignore[arg-type]
    model.fit(frame[FEATURES], frame[LABEL])
    return model


def auc(model: object, frame: pd.DataFrame) -> float:
    from sklearn.metrics import roc_auc_score

    scores = model.predict_proba(frame[FEATURES])[:, 1]  # type: ignore[attr-defined]
    return float(roc_auc_score(frame[LABEL], scores))


def ks(reference: pd.Series, current: pd.Series) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov (statistic, p-value)."""
    from scipy.stats import ks_2samp

    res = ks_2samp(reference.to_numpy(), current.to_numpy())
    return float(res.statistic), float(res.pvalue)


@dataclass
class StoryReport:
    """The calibration figures of one simulated world."""

    churn_rate: dict[str, float] = field(default_factory=dict)  # monthly snapshot -> 90-day churn share
    history_test_auc: float = 0.0
    frozen_auc: dict[int, float] = field(default_factory=dict)  # production week -> AUC
    retrained_auc: dict[int, float] = field(default_factory=dict)
    invoice_ks: dict[int, tuple[float, float]] = field(default_factory=dict)  # week -> (stat, p)
    tenure_ks: dict[int, tuple[float, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"churn rate at monthly snapshots: {_fmt(self.churn_rate)}"]
        out.append(f"history test AUC (train 1-12, test 16-18): {self.history_test_auc:.3f}")
        out.append(f"frozen model AUC by production week: {_fmt(self.frozen_auc)}")
        out.append(f"retrained model AUC by production week: {_fmt(self.retrained_auc)}")
        out.append(
            "invoice_amount KS (stat, p): "
            + ", ".join(f"{w}: {s:.3f}/{p:.1e}" for w, (s, p) in self.invoice_ks.items())
        )
        out.append(
            "tenure_months KS (stat, p): "
            + ", ".join(f"{w}: {s:.3f}/{p:.1e}" for w, (s, p) in self.tenure_ks.items())
        )
        out.append(f"seconds: {self.seconds:.1f}")
        return out


def _fmt(values: dict) -> str:  # type: ignore[type-arg]
    return ", ".join(f"{k}: {v:.3f}" for k, v in values.items())


def run_story(
    sim: SimulationSettings,
    workdir: Path,
    eval_weeks: tuple[int, ...] = (0, 4, 8, 12, 16),
    drift_weeks: tuple[int, ...] = (1, 2, 3, 8, 12),
    retrain_weeks: tuple[int, ...] = (4, 5, 6, 7, 8, 9, 10, 11, 12),
    model: ChurnModel | None = None,
) -> StoryReport:
    """Simulate history + production and measure the scenario (see the module docstring).

    Production week ``k``'s snapshot is taken as of ``history_end + 7 k`` days (week 0 = the
    production start). The retrained model learns from the snapshots of ``retrain_weeks``.
    """
    started = time.perf_counter()
    world = World.create(sim, model)
    tl = world.timeline
    world.simulate_history(workdir)
    last = max(*eval_weeks, *drift_weeks, *retrain_weeks)
    weeks_needed = last + (sim.label_horizon_days + 6) // 7 + sim.label_delay_weeks + 1
    world.advance(weeks_needed, workdir)
    con = duckdb.connect()
    load_landing_into_duckdb(con, workdir)

    def prod(k: int) -> dt.date:
        return tl.history_end + dt.timedelta(days=7 * k)

    monthly = list(tl.monthly_snapshots)
    prod_weeks = sorted(set(eval_weeks) | set(drift_weeks) | set(retrain_weeks))
    frame = labelled_frame(con, monthly + [prod(k) for k in prod_weeks], sim.label_horizon_days)
    ts = frame[EVENT_TIMESTAMP].dt.date
    report = StoryReport()
    for day in monthly:
        report.churn_rate[day.isoformat()] = float(frame.loc[ts == day, LABEL].mean())
    train = frame[ts.isin(monthly[:12])]
    test = frame[ts.isin(monthly[15:18])]
    frozen_hist = fit(train)
    report.history_test_auc = auc(frozen_hist, test)
    # The production model: trained on every labelled history snapshot.
    frozen = fit(frame[ts.isin(monthly)])
    retrained = fit(frame[ts.isin([prod(k) for k in retrain_weeks])])
    for k in eval_weeks:
        week = frame[ts == prod(k)]
        report.frozen_auc[k] = auc(frozen, week)
        report.retrained_auc[k] = auc(retrained, week)
    for k in drift_weeks:
        week = frame[ts == prod(k)]
        report.invoice_ks[k] = ks(train["invoice_amount"], week["invoice_amount"])
        report.tenure_ks[k] = ks(train["tenure_months"], week["tenure_months"])
    report.seconds = time.perf_counter() - started
    return report


def bench_simulate(sim: SimulationSettings, folder: Path) -> None:
    """Time World.create + simulate_history into ``folder/landing`` (run under /usr/bin/time -v)."""
    started = time.perf_counter()
    world = World.create(sim)
    created = time.perf_counter()
    keys = world.simulate_history(folder / "landing")
    done = time.perf_counter()
    world.save(folder / "state.pkl")
    print(
        f"create {created - started:.1f}s, simulate_history {done - created:.1f}s "
        f"({len(keys)} weeks, {len(world.customers):,} customers ever)"
    )


def bench_features(sim: SimulationSettings, folder: Path) -> None:
    """Time compute_snapshots over the monthly snapshots on a file-backed DuckDB of ``folder/landing``."""
    db = folder / "bench.duckdb"
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    started = time.perf_counter()
    load_landing_into_duckdb(con, folder / "landing")
    loaded = time.perf_counter()
    dates = list(Timeline.from_settings(sim).monthly_snapshots)
    snaps = compute_snapshots(con, dates)
    done = time.perf_counter()
    rows = snaps[FEATURE_GROUPS[0].name].num_rows
    usage_rows = con.sql("SELECT count(*) FROM raw.usage").fetchall()[0][0]
    print(
        f"load {loaded - started:.1f}s, compute_snapshots({len(dates)} dates) {done - loaded:.1f}s: "
        f"{rows:,} rows per group from {usage_rows:,} usage rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "mode", nargs="?", default="story", choices=["story", "bench-simulate", "bench-features"]
    )
    parser.add_argument("--n-customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dir", type=Path, default=None, help="Work folder of the benchmarks.")
    args = parser.parse_args()
    sim = SimulationSettings(n_customers=args.n_customers, seed=args.seed)
    if args.mode == "story":
        with tempfile.TemporaryDirectory() as tmp:
            for line in run_story(sim, Path(tmp)).lines():
                print(line)
        return
    if args.dir is None:
        parser.error("--dir is required for the benchmarks")
    args.dir.mkdir(parents=True, exist_ok=True)
    (bench_simulate if args.mode == "bench-simulate" else bench_features)(sim, args.dir)


if __name__ == "__main__":
    main()
