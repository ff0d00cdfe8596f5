"""Does a rolling retrain beat the frozen champion by > 0.02 within 16 production weeks?

The exploration behind the demo scenario (docs/automation.md, "Why the demo scenario differs"): simulate
history + 16 production weeks, fit the reference LightGBM (``simulation.calibration``) on the monthly
history snapshots ("frozen"), report its AUC on each production snapshot, then for demo weeks 8..16 refit
on the newest labelled snapshots of a rolling window (minus the newest 4) and score both on the newest 2.

    .venv/bin/python -m benchmarks.demo_scenario --horizon 28 --n-customers 10000 --window 12 \
        --shift-week 2 --ramp-weeks 4 --campaign-week 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import duckdb

from churn_assets.settings import SimulationSettings
from churn_assets.simulation.calibration import (
    EVENT_TIMESTAMP,
    auc,
    fit,
    labelled_frame,
    load_landing_into_duckdb,
)
from churn_assets.simulation.world import World


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--horizon", type=int, default=28)
    p.add_argument("--n-customers", type=int, default=10_000)
    p.add_argument("--window", type=int, default=12)
    p.add_argument("--shift-week", type=int, default=2)
    p.add_argument("--ramp-weeks", type=int, default=4)
    p.add_argument("--campaign-week", type=int, default=1)
    a = p.parse_args()
    sim = SimulationSettings(
        n_customers=a.n_customers,
        label_horizon_days=a.horizon,
        concept_shift_week=a.shift_week,
        concept_shift_ramp_weeks=a.ramp_weeks,
        campaign_start_week=a.campaign_week,
    )
    started = time.time()
    work = Path(tempfile.mkdtemp())
    world = World.create(sim)
    timeline = world.timeline
    world.simulate_history(work)
    world.advance(16, work)
    con = duckdb.connect()
    load_landing_into_duckdb(con, work)

    def prod(k: int) -> dt.date:
        return timeline.history_end + dt.timedelta(days=7 * k)

    delay_weeks = (a.horizon + 6) // 7 + 1  # weeks until a snapshot's label window is reported
    monthly = list(timeline.monthly_snapshots)
    weeks = list(range(16))
    frame = labelled_frame(con, monthly + [prod(k) for k in weeks], a.horizon)
    ts = frame[EVENT_TIMESTAMP].dt.date
    frozen = fit(frame[ts.isin(monthly)])
    print(f"horizon {a.horizon} d, {a.n_customers} customers, prepared in {time.time() - started:.0f} s")
    for k in weeks:
        print(f"frozen AUC, production snapshot {k}: {auc(frozen, frame[ts == prod(k)]):.3f} "
              f"(labels complete in week ~{k + delay_weeks})")  # fmt: skip
    for t in range(8, 17):
        labelled = [prod(k) for k in weeks if k + delay_weeks <= t]
        if len(labelled) < 3:
            continue
        dates = (monthly + labelled)[-a.window :]
        test, train = dates[-2:], dates[:-4]
        model = fit(frame[ts.isin(train)])
        holdout = frame[ts.isin(test)]
        print(f"week {t}: rolling retrain on {len(train)} snapshots, test {[d.isoformat() for d in test]}: "
              f"challenger {auc(model, holdout):.3f} vs frozen {auc(frozen, holdout):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
