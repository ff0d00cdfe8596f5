#!/usr/bin/env bash
# Create a bench-only venv for a tool that is not a churnops dependency (it runs apart, as a subprocess),
# or report the one already there when its modules import.
# Usage: bash benchmarks/setup_bench_venv.sh VENV_DIR MODULES PACKAGE_SPEC...
#   MODULES: comma-separated modules the venv must import (their versions are printed);
#   PACKAGE_SPEC: pip requirement specifiers to install. The venv is made with $PYTHON (default python3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
    echo "usage: bash benchmarks/setup_bench_venv.sh VENV_DIR MODULES PACKAGE_SPEC..." >&2
    exit 2
fi
VENV="$1"
MODULES="$2"
shift 2
PYTHON="${PYTHON:-python3.11}"
VERSIONS="import importlib; print(' '.join(f'{m} {importlib.import_module(m).__version__}' for m in '$MODULES'.split(',')))"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import $MODULES" 2>/dev/null; then
    echo "${MODULES%%,*} venv ready: $VENV ($("$VENV/bin/python" -c "$VERSIONS"))"
    exit 0
fi
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "$@"
"$VENV/bin/python" -c "$VERSIONS"
