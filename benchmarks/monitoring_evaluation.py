"""Measure the drift rule on simulated production: false alarms on stable weeks, campaign detection.

``python -m benchmarks.monitoring_evaluation --scenario stable --weeks 20`` simulates the default
world (20,000 customers) with the acquisition campaign and the concept shift switched off, runs the
main Dagster job over history, registers a champion (the simulator's reference LightGBM,
``simulation.calibration.LGBM_PARAMS``, fitted on the training set's train split and promoted through
the registry), lands and processes 20 production weeks, then runs the weekly drift and performance
step on each. ``--scenario default`` does the same with the scripted campaign (week 4) and price war
(week 6). It prints one line per week and a summary: flagged feature-weeks, the first week with a
drift alert and with >= 3 drifted features (the retraining trigger), and the seconds per weekly step.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from churn_assets.modeling.reference import register_champion
from churn_assets.settings import Settings, SimulationSettings
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline


@dataclass
class Evaluation:
    scenario: str
    weeks: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def flagged_feature_weeks(self) -> int:
        return sum(w["n_drifted"] for w in self.weeks)

    def first_week(self, min_features: int = 1) -> int | None:
        return next((w["week"] for w in self.weeks if w["n_drifted"] >= min_features), None)

    def lines(self) -> list[str]:
        out = [f"scenario {self.scenario}: {len(self.weeks)} production weeks"]
        for w in self.weeks:
            feats = ", ".join(f"{f} {s} {e:.3f}" for f, s, e in w["drifted"]) or "-"
            out.append(
                f"week {w['week']:>2} ({w['key']}): drifted {w['n_drifted']:>2} [{feats}]; "
                f"bare p<0.01: {w['bare_p']:>2}; largest unflagged {w['max_quiet'][1]} {w['max_quiet'][0]:.3f}; "
                f"root cause: {w['root_cause']}; est. AUC {w['estimated_auc']:.3f}"
                + (
                    f", realised AUC {w['auc']:.3f} ({w['labelled_week']})"
                    if w.get("auc") is not None
                    else ""
                )
                + f"; step {w['seconds']:.2f} s ("
                + ", ".join(f"{k} {v:.2f}" for k, v in w["timings"].items())
                + ")"
            )
        out.append(
            f"flagged feature-weeks: {self.flagged_feature_weeks} (a bare p < 0.01 rule: "
            f"{sum(w['bare_p'] for w in self.weeks)}); first alert: week {self.first_week()}; "
            f"first week with >= 3 drifted features: {self.first_week(3)}"
        )
        step = [w["seconds"] for w in self.weeks]
        out.append(
            f"weekly step (drift + performance) median {np.median(step):.2f} s, max {max(step):.2f} s; "
            + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        )
        return out


def run(n_customers: int, weeks: int, scenario: str, home: Path, seed: int = 42) -> Evaluation:
    import dagster as dg

    from churn_assets.defs.resources import build_resources
    from churn_assets.monitoring.weekly import drift_week, performance_week
    from churn_assets.orchestration import run_pipeline
    from churn_assets.simulation import World

    sim = SimulationSettings(n_customers=n_customers, seed=seed)
    if scenario == "stable":
        sim = sim.model_copy(update={"campaign_start_week": None, "concept_shift_week": None})
    settings = Settings(home=home, simulation=sim)
    result = Evaluation(scenario)
    instance = dg.DagsterInstance.ephemeral()
    resources: dict[str, object] = dict(build_resources(settings))
    t = time.perf_counter()
    world = World.create(sim)
    history = world.simulate_history(settings.landing_dir)
    result.seconds["history"] = time.perf_counter() - t
    t = time.perf_counter()
    assert run_pipeline(instance, history, resources=resources).success
    result.seconds["history pipeline"] = time.perf_counter() - t
    t = time.perf_counter()
    register_champion(settings)
    result.seconds["champion"] = time.perf_counter() - t
    t = time.perf_counter()
    keys = world.advance(weeks, settings.landing_dir)
    world.save(settings.world_state_path)
    assert run_pipeline(instance, keys, resources=resources).success
    result.seconds["production pipeline"] = time.perf_counter() - t
    timeline = Timeline.from_settings(sim)
    import datetime as dt

    with Warehouse.of(settings).connect() as con:
        for number, key in enumerate(keys, start=1):
            week = dt.date.fromisoformat(key)
            t = time.perf_counter()
            drift = drift_week(settings, con, timeline, week)
            t_drift = time.perf_counter()
            perf = performance_week(settings, con, timeline, week)
            seconds = time.perf_counter() - t
            timings = {
                **(drift.seconds if drift else {}),
                "drift": t_drift - t,
                "performance": seconds - (t_drift - t),
            }
            assert drift is not None and perf is not None
            meta = perf.metadata()
            rc = drift.report.root_cause
            result.weeks.append(
                {
                    "week": number,
                    "key": key,
                    "n_drifted": len(drift.report.drifted),
                    "drifted": [(f.feature, f.severity, f.effect) for f in drift.report.drifted],
                    "bare_p": sum(
                        f.p_value < settings.monitoring.drift_p_value for f in drift.report.features
                    ),
                    "max_quiet": max(
                        ((f.effect, f.feature) for f in drift.report.features if not f.drifted),
                        default=(0.0, "-"),
                    ),
                    "root_cause": rc["hint"] if rc else "-",
                    "estimated_auc": meta["estimated_auc"],
                    "auc": meta.get("auc"),
                    "labelled_week": meta.get("labelled_week"),
                    "seconds": seconds,
                    "timings": timings,
                }
            )
    return result


def time_step(home: Path, week_key: str) -> dict[str, float]:
    """Re-time the weekly step of an existing state folder (made by :func:`run`) as a fresh week: the
    cached reference sample, the week's stored predictions and the offline store's as-of index (dropped
    by every feature write) are removed first, so reference sampling, scoring and the store's state are
    as in a real week."""
    import datetime as dt

    from churn_assets.feature_store.offline import INDEX_TABLE
    from churn_assets.monitoring import history
    from churn_assets.monitoring.sources import load_champion, reference_cache_path
    from churn_assets.monitoring.weekly import drift_week, performance_week

    settings = Settings(home=home)
    timeline = Timeline.from_settings(settings.simulation)
    week = dt.date.fromisoformat(week_key)
    champion = load_champion(settings, with_model=False)
    reference_cache_path(settings, champion.data_sha256).unlink(missing_ok=True)
    with Warehouse.of(settings).connect() as con:
        history.ensure_schema(con)
        con.execute(f"DROP TABLE IF EXISTS {INDEX_TABLE}")
        con.execute("DELETE FROM monitoring.predictions WHERE as_of = ?", [week + dt.timedelta(days=7)])
        con.execute("DELETE FROM monitoring.performance_history WHERE week = ?", [week])
        t = time.perf_counter()
        drift = drift_week(settings, con, timeline, week)
        t_drift = time.perf_counter()
        perf = performance_week(settings, con, timeline, week)
        done = time.perf_counter()
    assert drift is not None and perf is not None and perf.scored_now > 0
    return {**drift.seconds, "drift": t_drift - t, "performance": done - t_drift, "total": done - t}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", choices=["stable", "default"], default="stable")
    parser.add_argument("--weeks", type=int, default=20)
    parser.add_argument("--n-customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dir", type=Path, default=None, help="State folder (default: a temporary one).")
    parser.add_argument(
        "--time-step", metavar="WEEK", default=None, help="Only re-time the weekly step of WEEK in --dir."
    )
    args = parser.parse_args()
    if args.time_step:
        if args.dir is None:
            parser.error("--time-step needs --dir (a folder made by a previous run)")
        timings = time_step(args.dir.resolve(), args.time_step)
        print("weekly step: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
        return
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        result = run(args.n_customers, args.weeks, args.scenario, args.dir.resolve(), args.seed)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args.n_customers, args.weeks, args.scenario, Path(tmp), args.seed)
    print("\n".join(result.lines()))


if __name__ == "__main__":
    main()
