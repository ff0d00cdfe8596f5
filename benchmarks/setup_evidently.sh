#!/usr/bin/env bash
# Create the bench-only Evidently venv at .churnops/bench/evidently-venv (Evidently is not a churnops
# dependency; benchmarks/evidently_drift.py runs in it as a subprocess on the same Parquet frames).
# Usage: bash benchmarks/setup_evidently.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.churnops/bench/evidently-venv}"
PYTHON="${PYTHON:-python3.11}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import evidently, pyarrow" 2>/dev/null; then
    echo "evidently venv ready: $VENV ($("$VENV/bin/python" -c 'import evidently; print(evidently.__version__)'))"
    exit 0
fi
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "evidently==0.7.*" "pandas<3" pyarrow
"$VENV/bin/python" -c "import evidently; print('evidently', evidently.__version__)"
