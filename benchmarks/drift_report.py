"""Benchmark: the drift report at full scale (1M reference rows vs 100k current, 45 features) against
plain scipy and Evidently 0.7's ``DataDriftPreset`` on the same frames.

Generic data under ``.churnops/bench/drift_<ref>x<cur>/`` (Parquet, built once): 40 stable columns
(normal, lognormal, Poisson counts with many ties, uniform; same distribution in both frames) and 5
materially shifted ones, each with a population KS distance of 0.12-0.2 (above our 0.1 floor): normal
+0.3 sd, normal x1.8 scale, lognormal +0.4 in log space, Poisson 3 -> 3.8, a 0/1 flag 20 % -> 35 %. Each engine runs in its own subprocess (peak RSS per engine):

* ``ours`` — ``churn_assets.monitoring.drift``: profile the reference (sort once), KS per column
  (== scipy), Bonferroni + KS >= 0.1 rule. Timed cold (profile + tests) and warm (tests only, the
  reference profile of a champion is reused every week); load time reported apart.
* ``scipy`` — ``scipy.stats.ks_2samp`` per column; verdicts at p < 0.05, and with Bonferroni.
* ``evidently-default`` / ``evidently-ks`` — ``DataDriftPreset()`` and ``DataDriftPreset(num_method="ks")``
  in the venv of ``setup_evidently.sh`` (``evidently_drift.py``, run as a file: it imports no churnops code), unless ``--skip-evidently``.

Usage::

    .venv/bin/python -m benchmarks.drift_report                 # full scale
    .venv/bin/python -m benchmarks.drift_report --reference-rows 100000 --current-rows 20000 --skip-evidently

(from the repository root; the Evidently venv needs ``python3.11`` or ``$PYTHON``)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.peak_rss import peak_rss_mb
from benchmarks.pit_retrieval import BENCH_DIR, child
from benchmarks.tools import require_bench_venv_python
from churn_assets.monitoring.drift import detect_drift, profile_reference
from churn_assets.settings import MonitoringSettings

ROOT = Path(__file__).resolve().parent.parent

EVIDENTLY_VENV = BENCH_DIR / "evidently-venv"
SHIFTED = ["shift_mean", "shift_scale", "shift_lognormal", "shift_poisson", "shift_flag"]


def _column(kind: int, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == 0:
        return rng.normal(10, 3, n)
    if kind == 1:
        return rng.lognormal(3, 0.8, n)
    if kind == 2:
        return rng.poisson(2.5, n).astype(np.float64)
    return rng.uniform(0, 100, n)


def build(data: Path, n_ref: int, n_cur: int, n_stable: int, seed: int) -> None:
    if (data / "reference.parquet").exists() and (data / "current.parquet").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ref: dict[str, np.ndarray] = {}
    cur: dict[str, np.ndarray] = {}
    for i in range(n_stable):
        ref[f"stable_{i:02d}"] = _column(i % 4, n_ref, rng)
        cur[f"stable_{i:02d}"] = _column(i % 4, n_cur, rng)
    ref["shift_mean"], cur["shift_mean"] = rng.normal(0, 1, n_ref), rng.normal(0.3, 1, n_cur)
    ref["shift_scale"], cur["shift_scale"] = rng.normal(0, 1, n_ref), rng.normal(0, 1.8, n_cur)
    ref["shift_lognormal"], cur["shift_lognormal"] = (
        rng.lognormal(3, 0.8, n_ref),
        rng.lognormal(3.4, 0.8, n_cur),
    )
    ref["shift_poisson"] = rng.poisson(3.0, n_ref).astype(np.float64)
    cur["shift_poisson"] = rng.poisson(3.8, n_cur).astype(np.float64)
    ref["shift_flag"] = (rng.random(n_ref) < 0.2).astype(np.float64)
    cur["shift_flag"] = (rng.random(n_cur) < 0.35).astype(np.float64)
    pl.DataFrame(ref).write_parquet(data / "reference.parquet")
    pl.DataFrame(cur).write_parquet(data / "current.parquet")


def run_ours(data: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    reference = pl.read_parquet(data / "reference.parquet")
    current = pl.read_parquet(data / "current.parquet")
    t1 = time.perf_counter()
    cfg = MonitoringSettings(exclude_features=[])
    profile = profile_reference(reference, reference.columns)
    t2 = time.perf_counter()
    report = detect_drift(profile, current, cfg)
    t3 = time.perf_counter()
    detect_drift(profile, current, cfg)  # warm: the champion's profile is reused every week
    t4 = time.perf_counter()
    return {
        "seconds": t3 - t1,
        "profile_seconds": t2 - t1,
        "tests_seconds": min(t3 - t2, t4 - t3),
        "load_seconds": t1 - t0,
        "drifted": sorted(report.drifted_features),
        "ks_shifted": {f.feature: round(f.statistic, 3) for f in report.features if f.feature in SHIFTED},
        "max_ks_stable": round(max(f.statistic for f in report.features if f.feature not in SHIFTED), 4),
        "rss_mb": peak_rss_mb(),
    }


def run_scipy(data: Path) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    reference = pl.read_parquet(data / "reference.parquet")
    current = pl.read_parquet(data / "current.parquet")
    started = time.perf_counter()
    pvalues = {
        c: float(ks_2samp(reference[c].to_numpy(), current[c].to_numpy()).pvalue) for c in reference.columns
    }
    seconds = time.perf_counter() - started
    alpha = 0.01 / len(pvalues)
    return {
        "seconds": seconds,
        "drifted": sorted(c for c, p in pvalues.items() if p < 0.05),
        "drifted_bonferroni": sorted(c for c, p in pvalues.items() if p < alpha),
        "rss_mb": peak_rss_mb(),
    }


def verdict(drifted: list[str], columns: list[str]) -> str:
    caught = sum(c in drifted for c in SHIFTED)
    false = sum(c not in SHIFTED for c in drifted)
    return f"{caught}/{len(SHIFTED)} shifted caught, {false}/{len(columns) - len(SHIFTED)} stable flagged"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference-rows", type=int, default=1_000_000)
    parser.add_argument("--current-rows", type=int, default=100_000)
    parser.add_argument("--stable", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per engine")
    parser.add_argument("--max-rss-gb", type=float, default=12, help="kill an engine using more memory")
    parser.add_argument("--engine", choices=["ours", "scipy"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:  # child mode
        print(json.dumps((run_ours if args.engine == "ours" else run_scipy)(args.data)))
        return
    if not args.skip_evidently:
        require_bench_venv_python(EVIDENTLY_VENV, "--skip-evidently")

    data = BENCH_DIR / f"drift_v2_{args.reference_rows}x{args.current_rows}"
    build(data, args.reference_rows, args.current_rows, args.stable, args.seed)
    columns = pl.read_parquet_schema(data / "reference.parquet")
    print(
        f"reference {args.reference_rows:,} rows vs current {args.current_rows:,} rows, {len(columns)} columns "
        f"({len(SHIFTED)} shifted); data in {data}"
    )
    me = [sys.executable, "-m", "benchmarks.drift_report", "--data", str(data)]
    results: dict[str, dict[str, Any]] = {}
    for engine in ("ours", "scipy"):
        results[engine] = child([*me, "--engine", engine], args.timeout, args.max_rss_gb)
        print(f"  {engine}: {results[engine]}", flush=True)
    if not args.skip_evidently:
        subprocess.run(
            ["bash", str(ROOT / "benchmarks" / "setup_evidently.sh"), str(EVIDENTLY_VENV)], check=True
        )
        evidently = [str(EVIDENTLY_VENV / "bin" / "python"), str(ROOT / "benchmarks" / "evidently_drift.py")]
        for name, extra in (("evidently-default", []), ("evidently-ks", ["--num-method", "ks"])):
            results[name] = child([*evidently, "--data", str(data), *extra], args.timeout, args.max_rss_gb)
            print(f"  {name}: {results[name]}", flush=True)

    names = list(columns)
    print()
    print(f"{'engine':<20}{'seconds':>9}{'peak RSS MB':>13}{'load':>6}  verdicts")
    for engine, r in results.items():
        if "error" in r:
            print(f"{engine:<20}  {r['error']}")
            continue
        line = f"{engine:<20}{r['seconds']:>9.2f}{r['rss_mb']:>13,.0f}{r['load']:>6.1f}  {verdict(r['drifted'], names)}"
        if engine == "scipy":
            line += f" at p < 0.05; Bonferroni: {verdict(r['drifted_bonferroni'], names)}"
        print(line)
    ours = results["ours"]
    if "error" not in ours:
        print(
            f"ours: profile {ours['profile_seconds']:.2f} s + tests {ours['tests_seconds']:.2f} s "
            f"(load {ours['load_seconds']:.2f} s, not counted)"
        )
        for name in ("scipy", "evidently-default", "evidently-ks"):
            other = results.get(name, {})
            if "seconds" in other:
                print(f"  {name} / ours = {other['seconds'] / ours['seconds']:.1f}x")
    print(
        "(seconds exclude reading the Parquet files; load = 1-min load average when the engine started; 2 cores)"
    )


if __name__ == "__main__":
    main()
