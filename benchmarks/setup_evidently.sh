#!/usr/bin/env bash
# Create the bench-only Evidently venv at .churnops/bench/evidently-venv (Evidently is not a churnops
# dependency; benchmarks/evidently_drift.py runs in it as a subprocess on the same Parquet frames).
# Usage: bash benchmarks/setup_evidently.sh [VENV_DIR]
set -euo pipefail
exec bash "$(dirname "$0")/setup_bench_venv.sh" "${1:-.churnops/bench/evidently-venv}" evidently,pyarrow \
    "evidently==0.7.*" "pandas<3" pyarrow
