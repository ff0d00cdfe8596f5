#!/usr/bin/env bash
# Create the bench-only Feast venv at .churnops/bench/feast-venv (Feast does not co-install with
# our pins, so it lives apart and benchmarks/pit_retrieval.py runs benchmarks/feast_pit.py in it).
# Usage: bash benchmarks/setup_feast.sh [VENV_DIR]
# feast[duckdb] pulls ibis-framework[duckdb], which its duckdb offline store is built on.
set -euo pipefail
exec bash "$(dirname "$0")/setup_bench_venv.sh" "${1:-.churnops/bench/feast-venv}" feast,ibis \
    "feast[duckdb]==0.67.*" psutil
