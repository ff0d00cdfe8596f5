"""Import time of the modules every Dagster run process loads, with and without cached bytecode.

Each Dagster run (a production week, a retraining, a rollout step) is a fresh Python process that
loads the code location and then the libraries its steps use (MLflow, LightGBM, scikit-learn ...).
Where ``PYTHONDONTWRITEBYTECODE`` is set -- as on our CI machines -- Python never writes ``.pyc``
files, so unless they were compiled at install time (``make install`` does: ``uv pip install
--compile-bytecode``) every process compiles those packages from source again.

This script times ``python -c "import X"`` in fresh processes, ``--repeat`` times per module, in two
modes in the same run:

* ``cached``: the interpreter as installed (reads the ``.pyc`` files next to the sources);
* ``no cache``: ``PYTHONPYCACHEPREFIX`` points at an empty folder and bytecode writing is off, so
  every import compiles from source -- what a venv without compiled bytecode costs every process.

    .venv/bin/python -m benchmarks.import_time
    .venv/bin/python -m benchmarks.import_time --repeat 5 --module dagster --module mlflow
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

DEFAULT_MODULES = (
    "churn_assets.definitions",  # the code location: what every run process loads first
    "churn_assets.modeling.registry",  # MLflow client (champion / challenger aliases)
    "lightgbm",
    "sklearn.metrics",
    "scipy.stats",
    "matplotlib.pyplot",
)


def time_import(module: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], env=env, check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--module", action="append", default=[], help="Module to import (repeatable).")
    parser.add_argument("--repeat", type=int, default=3, help="Fresh processes per module and mode.")
    args = parser.parse_args(argv)
    modules = args.module or list(DEFAULT_MODULES)

    cached = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="churnops-no-pyc-") as empty:
        no_cache = dict(os.environ, PYTHONPYCACHEPREFIX=empty, PYTHONDONTWRITEBYTECODE="1")
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} cores, 1-min load {os.getloadavg()[0]:.2f}, "
            f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}; "
            f"median of {args.repeat} fresh processes",
            flush=True,
        )
        print("\n| module | cached s | no cache s | ratio |\n|---|---:|---:|---:|")
        for module in modules:
            with_pyc = statistics.median(time_import(module, cached) for _ in range(args.repeat))
            without = statistics.median(time_import(module, no_cache) for _ in range(args.repeat))
            print(f"| `{module}` | {with_pyc:.2f} | {without:.2f} | {without / with_pyc:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
