"""Benchmark: point-in-time (PIT) retrieval of 45 features for 1M entity rows from a 9M-row store.

Builds (or reuses) a full-scale-shaped store under ``.churnops/bench/pit_<customers>x<snapshots>/``:
one Parquet file per feature group (``customers × snapshots`` rows, the declared dtypes), the same
data in our DuckDB offline store, and an entity frame (random customers incl. ~1% unknown ones,
random timestamps, ~1% duplicated (customer, timestamp) pairs, plus a ``label`` column). Then it
times, each in its own subprocess (so peak RSS is per engine):

* ours: :meth:`OfflineStore.get_historical_features` (first call + best of ``--repeats``);
* polars: ``join_asof`` per group on frames already in memory (reference; load time excluded);
* Feast 0.67 ``file`` and ``duckdb`` offline stores on the same Parquet files (``feast_pit.py`` in
  the separate venv made by ``setup_feast.sh``), unless ``--skip-feast``.

Usage::

    .venv/bin/python -m benchmarks.pit_retrieval                       # full scale
    .venv/bin/python -m benchmarks.pit_retrieval --customers 20000 --entity-rows 50000 --skip-feast

(from the repository root; the engines run as ``python -m benchmarks.pit_retrieval --engine ...``
children in the same working directory; the Feast venv needs ``python3.11`` or ``$PYTHON``)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.peak_rss import peak_rss_mb
from benchmarks.tools import require_bench_venv_python
from churn_assets.feature_store.definitions import FEATURE_GROUPS, FeatureGroup
from churn_assets.feature_store.offline import OfflineStore

ROOT = Path(__file__).resolve().parent.parent

BENCH_DIR = ROOT / ".churnops" / "bench"
FEAST_VENV = BENCH_DIR / "feast-venv"
FIRST_SNAPSHOT = dt.datetime(2024, 1, 1)
VOCABULARY = 12  # distinct values per string feature


def snapshot_times(n: int) -> list[dt.datetime]:
    """First Monday of ``n`` consecutive months from January 2024 (as the timeline does)."""
    out = []
    for i in range(n):
        year, month = 2024 + i // 12, i % 12 + 1
        first = dt.datetime(year, month, 1)
        out.append(first + dt.timedelta(days=(7 - first.weekday()) % 7))
    return out


def group_table(group: FeatureGroup, customers: int, times: list[dt.datetime], seed: int) -> pa.Table:
    """``customers × len(times)`` rows sorted by (customer_id, event_timestamp), declared dtypes."""
    rng = np.random.default_rng(seed)
    n = customers * len(times)
    ts = np.tile(np.asarray(times, dtype="datetime64[us]"), customers)
    columns: dict[str, pa.Array] = {
        "customer_id": pa.array(np.repeat(np.arange(customers, dtype=np.int64), len(times))),
        "event_timestamp": pa.array(ts),
        "created_at": pa.array(ts + np.timedelta64(3600, "s")),
    }
    for f in group.features:
        if f.dtype == "int64":
            columns[f.name] = pa.array(rng.integers(0, 500, n, dtype=np.int64))
        elif f.dtype == "float64":
            columns[f.name] = pa.array(rng.gamma(2.0, 20.0, n))
        else:
            words = pa.array([f"{f.name}_{i}" for i in range(VOCABULARY)])
            codes = pa.array(rng.integers(0, VOCABULARY, n, dtype=np.int32))
            columns[f.name] = pa.DictionaryArray.from_arrays(codes, words).cast(pa.string())
    return pa.table(columns)


def entity_table(customers: int, rows: int, times: list[dt.datetime], seed: int) -> pa.Table:
    """Random (customer, timestamp) rows: ~1% unknown customers, ~1% duplicated pairs, a label."""
    rng = np.random.default_rng(seed)
    start = np.datetime64(times[0] - dt.timedelta(days=7), "s")
    span = int((times[-1] + dt.timedelta(days=50) - times[0]).total_seconds())
    ids = rng.integers(0, int(customers * 1.01) + 1, rows, dtype=np.int64)
    ts = (start + rng.integers(0, span, rows).astype("timedelta64[s]")).astype("datetime64[us]")
    dup = rng.choice(rows, size=rows // 100, replace=False)
    src = rng.integers(0, rows, dup.size)
    ids[dup], ts[dup] = ids[src], ts[src]
    return pa.table(
        {
            "customer_id": ids,
            "event_timestamp": ts,
            "label": rng.integers(0, 2, rows, dtype=np.int8),
        }
    )


def build(data: Path, customers: int, snapshots: int, entity_rows: int, seed: int) -> None:
    """Write the Parquet files, the DuckDB store and ``meta.json`` into ``data`` (skip if present)."""
    meta_path = data / "meta.json"
    times = snapshot_times(snapshots)
    data.mkdir(parents=True, exist_ok=True)
    if not meta_path.exists():
        store_path = data / "store.duckdb"
        store_path.unlink(missing_ok=True)
        store = OfflineStore.open(store_path)
        for i, group in enumerate(FEATURE_GROUPS):
            started = time.perf_counter()
            table = group_table(group, customers, times, seed + i)
            pq.write_table(table, data / f"{group.name}.parquet", row_group_size=1_000_000)
            store.write(group.name, table)
            print(f"  built {group.name}: {table.num_rows:,} rows in {time.perf_counter() - started:.1f}s")
        started = time.perf_counter()
        store.rebuild_index()
        print(f"  built the ASOF key index in {time.perf_counter() - started:.1f}s")
        store.close()
        groups = [
            {
                "name": g.name,
                "ttl_seconds": g.ttl.total_seconds(),
                "features": [[f.name, f.dtype] for f in g.features],
            }
            for g in FEATURE_GROUPS
        ]
        meta_path.write_text(json.dumps({"customers": customers, "snapshots": snapshots, "groups": groups}))
    entity_path = data / f"entity_{entity_rows}.parquet"
    if not entity_path.exists():
        pq.write_table(entity_table(customers, entity_rows, times, seed + 100), entity_path)


def timed(run: Callable[[], Any], repeats: int) -> tuple[dict[str, Any], Any]:
    """Run once cold, then ``repeats`` more times; the first, the best, its CPU time, rows, peak RSS."""
    times, cpu = [], []
    for _ in range(repeats + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        out = run()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    best = min(range(1, len(times)), key=times.__getitem__)
    stats = {
        "first": times[0],
        "best": times[best],
        "cpu": cpu[best],
        "rows": out.height,
        "rss_mb": peak_rss_mb(),
    }
    return stats, out


def run_ours(data: Path, entity_rows: int, repeats: int) -> dict[str, Any]:
    entity = pq.read_table(data / f"entity_{entity_rows}.parquet")
    store = OfflineStore.open(data / "store.duckdb")
    result, out = timed(lambda: store.get_historical_features(entity), repeats)
    assert out.width == entity.num_columns + 45
    return result


def run_polars(data: Path, entity_rows: int, repeats: int) -> dict[str, Any]:
    import polars as pl

    meta = json.loads((data / "meta.json").read_text())
    entity = pl.read_parquet(data / f"entity_{entity_rows}.parquet")
    groups = [(g, pl.read_parquet(data / f"{g['name']}.parquet").drop("created_at")) for g in meta["groups"]]

    def once() -> pl.DataFrame:
        out = entity.with_row_index("_row").sort("event_timestamp")
        for g, frame in groups:
            out = out.join_asof(
                frame.rename({"event_timestamp": "_ts"}).sort("_ts"),
                left_on="event_timestamp",
                right_on="_ts",
                by="customer_id",
                strategy="backward",
                tolerance=dt.timedelta(seconds=g["ttl_seconds"]),
                check_sortedness=False,
            ).drop("_ts")
        return out.sort("_row").drop("_row")

    result, _ = timed(once, repeats)
    return result


def child(cmd: list[str], timeout: float, max_rss_gb: float) -> dict[str, Any]:
    """Run an engine in a subprocess; its last stdout line is a JSON result.

    The child is killed when it runs past ``timeout`` seconds or its resident memory (with its own
    children) passes ``max_rss_gb`` — the box is shared, so a runaway engine must not OOM it.
    """
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        watched = psutil.Process(proc.pid)
        started, peak, killed = time.monotonic(), 0.0, ""
        while proc.poll() is None:
            try:
                rss = sum(p.memory_info().rss for p in [watched, *watched.children(recursive=True)]) / 2**30
            except psutil.Error:
                rss = 0.0
            peak = max(peak, rss)
            if rss > max_rss_gb:
                killed = f"killed at {rss:.1f} GB resident (limit {max_rss_gb:g} GB)"
            elif time.monotonic() - started > timeout:
                killed = f"killed after {timeout:.0f}s (timeout)"
            if killed:
                for p in [*watched.children(recursive=True), watched]:
                    with contextlib.suppress(psutil.Error):
                        p.kill()
                proc.wait()
                return {"error": killed}
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["load"] = load
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=500_000)
    parser.add_argument("--snapshots", type=int, default=18)
    parser.add_argument("--entity-rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the first (best is kept)")
    parser.add_argument("--feast-repeats", type=int, default=1, help="Feast runs after the first")
    parser.add_argument("--skip-feast", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per engine")
    parser.add_argument("--max-rss-gb", type=float, default=12, help="kill an engine using more memory")
    parser.add_argument("--engine", choices=["ours", "polars"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.engine:  # child mode
        runner = run_ours if args.engine == "ours" else run_polars
        print(json.dumps(runner(args.data, args.entity_rows, args.repeats)))
        return
    if not args.skip_feast:
        require_bench_venv_python(FEAST_VENV, "--skip-feast")

    data = BENCH_DIR / f"pit_{args.customers}x{args.snapshots}"
    print(
        f"store: {args.customers:,} customers × {args.snapshots} snapshots × 45 features; "
        f"{args.entity_rows:,} entity rows; data in {data}"
    )
    started = time.perf_counter()
    build(data, args.customers, args.snapshots, args.entity_rows, args.seed)
    print(f"data ready in {time.perf_counter() - started:.1f}s")
    entity = pq.read_table(
        data / f"entity_{args.entity_rows}.parquet", columns=["customer_id", "event_timestamp"]
    )
    unique_pairs = entity.group_by(["customer_id", "event_timestamp"]).aggregate([]).num_rows
    print(
        f"entity rows: {entity.num_rows:,} ({entity.num_rows - unique_pairs:,} duplicate (customer, ts) pairs)"
    )

    me = [
        sys.executable,
        "-m",
        "benchmarks.pit_retrieval",
        "--data",
        str(data),
        "--entity-rows",
        str(args.entity_rows),
    ]
    results: dict[str, dict[str, Any]] = {}
    for engine in ("ours", "polars"):
        results[engine] = child(
            [*me, "--engine", engine, "--repeats", str(args.repeats)], args.timeout, args.max_rss_gb
        )
        print(f"  {engine}: {results[engine]}", flush=True)
    if not args.skip_feast:
        subprocess.run(["bash", str(ROOT / "benchmarks" / "setup_feast.sh"), str(FEAST_VENV)], check=True)
        feast = [str(FEAST_VENV / "bin" / "python"), str(ROOT / "benchmarks" / "feast_pit.py")]
        for store in ("file", "duckdb"):
            cmd = [*feast, "--data", str(data), "--entity-rows", str(args.entity_rows), "--store", store]
            results[f"feast-{store}"] = child(
                [*cmd, "--repeats", str(args.feast_repeats)], args.timeout, args.max_rss_gb
            )
            print(f"  feast-{store}: {results[f'feast-{store}']}", flush=True)

    ours = results["ours"].get("best")
    print()
    print(
        f"{'engine':<14}{'first s':>9}{'best s':>9}{'CPU s':>8}{'rows returned':>15}"
        f"{'peak RSS MB':>13}{'vs ours':>9}{'load':>6}"
    )
    for engine, r in results.items():
        if "error" in r:
            print(f"{engine:<14}  {r['error']}")
            continue
        speedup = f"{r['best'] / ours:.1f}×" if ours else "-"
        cpu = f"{r['cpu']:.2f}" if "cpu" in r else "-"
        print(
            f"{engine:<14}{r['first']:>9.2f}{r['best']:>9.2f}{cpu:>8}{r['rows']:>15,}"
            f"{r['rss_mb']:>13,.0f}{speedup:>9}{r['load']:>6.1f}"
        )
    print("(best of the timed runs after the first; CPU s = process CPU time of that run, all threads;")
    print(" load = 1-min load average of the box when the engine started; 2 cores)")


if __name__ == "__main__":
    main()
