#!/usr/bin/env bash
# Create the bench-only Feast venv at .churnops/bench/feast-venv (Feast does not co-install with
# our pins, so it lives apart and benchmarks/feast_pit.py runs in it as a subprocess).
# Usage: bash benchmarks/setup_feast.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.churnops/bench/feast-venv}"
PYTHON="${PYTHON:-python3.11}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import feast, ibis" 2>/dev/null; then
    echo "feast venv ready: $VENV ($("$VENV/bin/python" -c 'import feast; print(feast.__version__)'))"
    exit 0
fi
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# feast[duckdb] pulls ibis-framework[duckdb], which its duckdb offline store is built on.
"$VENV/bin/pip" install --quiet "feast[duckdb]==0.67.*" psutil
"$VENV/bin/python" -c "import feast, ibis; print('feast', feast.__version__, 'ibis', ibis.__version__)"
