"""Full-scale foundation benchmark: simulate history, then raw + contracts + features + online store.

Prints wall time per stage and the peak RSS of the process (the whole run is one process: the
simulator, then the Dagster job executed in process, exactly as `churnops demo` runs it).

    .venv/bin/python -m benchmarks.full_scale_pipeline                 # 500,000 customers (= make bench)
    .venv/bin/python -m benchmarks.full_scale_pipeline --customers 20000

Targets (2-core / 24 GB box): <= 6 min and <= 8 GB for the whole thing at full scale.
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import time
from pathlib import Path

import dagster as dg
import duckdb

from churn_assets.defs.resources import build_resources
from churn_assets.orchestration import run_pipeline
from churn_assets.settings import Settings, SimulationSettings
from churn_assets.simulation import World


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=500_000)
    parser.add_argument("--home", type=Path, default=Path(".churnops/bench/full_scale"))
    parser.add_argument("--keep", action="store_true", help="Keep the state folder afterwards.")
    args = parser.parse_args()

    if args.home.exists():
        shutil.rmtree(args.home)
    settings = Settings(home=args.home, simulation=SimulationSettings(n_customers=args.customers))
    stages: list[tuple[str, float, float]] = []

    started = time.perf_counter()
    world = World.create(settings.simulation)
    weeks = world.simulate_history(settings.landing_dir)
    world.save(settings.world_state_path)
    stages.append(("simulate history -> landing files", time.perf_counter() - started, peak_rss_gb()))

    t = time.perf_counter()
    instance = dg.DagsterInstance.ephemeral()
    result = run_pipeline(instance, weeks, resources=build_resources(settings), raise_on_error=True)
    stages.append(("dagster job: raw + checks + features + online", time.perf_counter() - t, peak_rss_gb()))
    total = time.perf_counter() - started

    by_step: dict[str, float] = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_SUCCESS" and event.step_key:
            by_step[event.step_key] = event.event_specific_data.duration_ms / 1000  # type: ignore[union-attr]

    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        raw_rows = {
            t: con.execute(f"SELECT count(*) FROM raw.{t}").fetchone()[0]  # type: ignore[index]
            for t in ("accounts", "usage", "engagement", "billing", "support_tickets", "churn_events")
        }
        feature_rows = con.execute("SELECT count(*) FROM features.customer_usage").fetchone()[0]  # type: ignore[index]

    print(
        f"\nmachine: {platform.machine()}, {resource.getpagesize()} B pages, python {platform.python_version()}"
    )
    print(f"customers: {args.customers:,}; weeks landed: {len(weeks)}; job success: {result.success}")
    print(f"raw rows: {', '.join(f'{k}={v:,}' for k, v in raw_rows.items())}")
    print(f"feature rows per group (customer x snapshot): {feature_rows:,}")
    print("\n| stage | seconds | peak RSS so far (GB) |\n|---|---:|---:|")
    for name, seconds, rss in stages:
        print(f"| {name} | {seconds:,.1f} | {rss:.2f} |")
    print(f"| **total** | **{total:,.1f}** | **{peak_rss_gb():.2f}** |")
    print("\n| Dagster step | seconds |\n|---|---:|")
    for step, seconds in sorted(by_step.items(), key=lambda kv: -kv[1]):
        print(f"| {step} | {seconds:,.1f} |")
    if not args.keep:
        shutil.rmtree(args.home, ignore_errors=True)


if __name__ == "__main__":
    main()
