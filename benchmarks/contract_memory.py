"""Peak memory and time of ``churnops contracts check`` on a large CSV, good and bad.

Generates, under a temporary folder (deleted afterwards unless ``--keep``), a landing file
``accounts/2024-01-01.csv`` of ``--mb`` megabytes in three variants and checks each with
``/usr/bin/time -v`` (with ``--ingest``, also ingests it into a fresh warehouse, as the raw asset
does):

* ``good``: distinct valid rows (every row passes);
* ``repeated``: one valid row repeated (every row after the first breaks ``field_uniqueness``);
* ``broken``: distinct rows that each break several rules (category, range, plausible date).

Prints one JSON document: per variant the file size, rows, and for the check (and the ingestion)
the exit code, peak RSS (MB) and seconds, plus the 1-minute load average before and after. Run::

    .venv/bin/python -m benchmarks.contract_memory            # 200 MB files
    .venv/bin/python -m benchmarks.contract_memory --mb 20    # a quick look
    .venv/bin/python -m benchmarks.contract_memory --ingest   # and the ingestion of each file
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.tools import require_tool, venv_tool
from data_contracts.categories import (
    ACQUISITION_CHANNELS,
    AGE_BANDS,
    CONTRACT_TYPES,
    PAYMENT_METHODS,
    PLAN_TYPES,
    REGIONS,
    SEGMENTS,
)

BLOCK_ROWS = 500_000
WEEK = "2024-01-01"  # the landing week of the generated files


def _block(start: int, n: int, variant: str, rng: np.random.Generator) -> pl.DataFrame:
    def pick(values: tuple[str, ...]) -> np.ndarray:
        return np.asarray(values)[rng.integers(0, len(values), n)]

    ids = np.arange(start + 1, start + n + 1) if variant != "repeated" else np.ones(n, dtype=np.int64)
    frame = pl.DataFrame(
        {
            "week_start": [WEEK] * n,
            "customer_id": ids,
            "signup_date": (np.datetime64("2015-01-01") + rng.integers(0, 3000, n)).astype(str),
            "plan_type": pick(PLAN_TYPES),
            "contract_type": pick(CONTRACT_TYPES),
            "payment_method": pick(PAYMENT_METHODS),
            "acquisition_channel": pick(ACQUISITION_CHANNELS),
            "region": pick(REGIONS),
            "segment": pick(SEGMENTS),
            "age_band": pick(AGE_BANDS),
            "num_lines": rng.integers(1, 6, n),
            "monthly_revenue": np.round(rng.uniform(10, 300, n), 2),
            "paperless_billing": rng.random(n) < 0.5,
        }
    )
    if variant == "repeated":
        frame = frame.head(1).select(pl.all().repeat_by(n).explode())
    if variant == "broken":
        frame = frame.with_columns(
            pl.lit("gold").alias("plan_type"),
            pl.lit(0).alias("num_lines"),
            pl.lit("1900-01-01").alias("signup_date"),
        )
    return frame


def generate(path: Path, mb: int, variant: str, seed: int = 7) -> int:
    """Write an accounts CSV of at least ``mb`` MB (10^6 bytes); returns its row count."""
    rng = np.random.default_rng(seed)
    rows = 0
    with path.open("wb") as out:
        while out.tell() < mb * 1_000_000:
            n = min(BLOCK_ROWS, max((mb * 1_000_000 - out.tell()) // 100, 1_000))
            _block(rows, n, variant, rng).write_csv(out, include_header=rows == 0)
            rows += n
    return rows


def _time_v(cmd: list[str]) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run ``cmd`` under ``/usr/bin/time -v``: the process, its peak RSS (MB) and wall seconds."""
    time = require_tool("time", "apt-get install time (GNU time, for /usr/bin/time -v)")
    done = subprocess.run([time, "-v", *cmd], capture_output=True, text=True, check=False)
    stats = done.stderr
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stats).group(1))  # type: ignore[union-attr]
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", stats).group(1)  # type: ignore[union-attr]
    seconds = sum(float(p) * 60**i for i, p in enumerate(reversed(wall.split(":"))))
    return done, round(peak_kb / 1024, 1), round(seconds, 2)


def measure_check(folder: Path, extra: list[str]) -> dict[str, object]:
    cmd = [str(venv_tool("churnops")), "contracts", "check", str(folder), "--json", *extra]
    done, peak, seconds = _time_v(cmd)
    report = json.loads(done.stdout)
    return {
        "exit_code": done.returncode,
        "peak_rss_mb": peak,
        "seconds": seconds,
        "rejected": sum(r["rejected"] for r in report),
        "violations": [(v["column_name"], v["rule"], v["rows"]) for r in report for v in r["violations"]],
        "command": "/usr/bin/time -v " + " ".join(cmd),
    }


def measure_ingest(folder: Path) -> dict[str, object]:
    """Ingest the week into a fresh warehouse in a child process (as the raw asset does)."""
    cmd = [sys.executable, "-m", "benchmarks.contract_memory", "--ingest-landing", str(folder)]
    done, peak, seconds = _time_v(cmd)
    if done.returncode != 0:
        raise SystemExit(f"ingestion failed: {done.stderr[-2000:]}")
    return {"peak_rss_mb": peak, "seconds": seconds, **json.loads(done.stdout.splitlines()[-1])}


def _ingest(landing: Path) -> None:
    from churn_assets.ingestion.ingest import ingest_partitions
    from churn_assets.storage.warehouse import Warehouse

    with Warehouse(landing / "warehouse.duckdb").connect() as con:
        report = ingest_partitions(con, landing, "accounts", [WEEK])
    print(
        json.dumps(
            {"rows_in": report.rows_in, "stored": report.rows_accepted, "quarantined": report.rows_rejected}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=200, help="Size of each generated CSV in MB (default 200).")
    parser.add_argument("--variants", nargs="+", default=["good", "repeated", "broken"])
    parser.add_argument("--chunk-rows", type=int, default=None, help="Passed to contracts check.")
    parser.add_argument(
        "--ingest", action="store_true", help="Also time ingesting each file (raw asset path)."
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="Where to write the files (default: a temp dir)."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the generated files.")
    parser.add_argument("--ingest-landing", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ingest_landing is not None:
        _ingest(args.ingest_landing)
        return
    extra = ["--chunk-rows", str(args.chunk_rows)] if args.chunk_rows else []
    base = Path(tempfile.mkdtemp(prefix="contract_memory_", dir=args.dir))
    results: dict[str, object] = {"load_average_before": os.getloadavg()[0], "mb": args.mb}
    try:
        for variant in args.variants:
            folder = base / variant
            path = folder / "accounts" / f"{WEEK}.csv"
            path.parent.mkdir(parents=True)
            rows = generate(path, args.mb, variant)
            outcome = {"file_mb": round(path.stat().st_size / 1e6, 1), "rows": rows}
            outcome["check"] = measure_check(folder, extra)
            if args.ingest:
                outcome["ingest"] = measure_ingest(folder)
            results[variant] = outcome
            shutil.rmtree(folder)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    results["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
