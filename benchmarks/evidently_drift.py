"""Evidently side of ``drift_report.py``: ``DataDriftPreset`` on the same Parquet frames.

Runs inside the Evidently venv (``benchmarks/setup_evidently.sh``), so it imports nothing from
churnops. Prints one JSON line: ``{"seconds": s, "load_seconds": s, "drifted": [...], "rss_mb": mb,
"methods": {...}}``.

Usage: ``.churnops/bench/evidently-venv/bin/python benchmarks/evidently_drift.py --data DIR [--num-method ks]``
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
from peak_rss import peak_rss_mb  # the sibling benchmarks/peak_rss.py: this runs as a file

# Tests whose value is a p-value (drift when below the threshold); the others are distances.
P_VALUE_METHODS = {
    "ks",
    "chisquare",
    "z",
    "fisher_exact",
    "g_test",
    "t_test",
    "mannw",
    "anderson",
    "cramer_von_mises",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--num-method", default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    reference = pd.read_parquet(args.data / "reference.parquet")
    current = pd.read_parquet(args.data / "current.parquet")
    loaded = time.perf_counter()
    preset = DataDriftPreset(num_method=args.num_method) if args.num_method else DataDriftPreset()
    snapshot = Report([preset]).run(current_data=current, reference_data=reference)
    done = time.perf_counter()
    drifted, methods = [], {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith("ValueDrift"):
            continue
        method, threshold, value = config["method"], float(config["threshold"]), float(metric["value"])
        methods[method] = threshold
        is_drift = value < threshold if method in P_VALUE_METHODS else value >= threshold
        if is_drift:
            drifted.append(config["column"])
    print(
        json.dumps(
            {
                "seconds": done - loaded,
                "load_seconds": loaded - started,
                "drifted": sorted(drifted),
                "methods": methods,
                "rss_mb": peak_rss_mb(),
            }
        )
    )


if __name__ == "__main__":
    main()
