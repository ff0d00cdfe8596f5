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

``--command`` times whole commands instead (cached bytecode only), e.g. the CLI's start-up:

    .venv/bin/python -m benchmarks.import_time --repeat 7 --command "churnops --help" \
        --command "churnops contracts check data_contracts/samples/good"

A command's first word is looked up next to this interpreter first (``.venv/bin/churnops``); the
table gives min and median wall-clock seconds and the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def time_command(argv: list[str]) -> float:
    """Wall-clock seconds of one run of ``argv`` (its output discarded; a failure is reported)."""
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 1: e.g. `contracts check` of a folder with violations
        raise SystemExit(f"{shlex.join(argv)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return seconds


def resolve(command: str) -> list[str]:
    """``command`` split like a shell would; its program taken from this interpreter's folder if there."""
    argv = shlex.split(command)
    local = Path(sys.executable).with_name(argv[0])
    return [str(local), *argv[1:]] if local.exists() else argv


def time_commands(commands: list[str], repeat: int) -> None:
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {repeat} runs per command",
        flush=True,
    )
    print("\n| command | min s | median s | 1-min load before / after |\n|---|---:|---:|---|")
    for command in commands:
        argv = resolve(command)
        load_before = os.getloadavg()[0]
        times = [time_command(argv) for _ in range(repeat)]
        print(
            f"| `{command}` | {min(times):.2f} | {statistics.median(times):.2f} | "
            f"{load_before:.2f} / {os.getloadavg()[0]:.2f} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--module", action="append", default=[], help="Module to import (repeatable).")
    parser.add_argument(
        "--command", action="append", default=[], help="Whole command to time instead (repeatable)."
    )
    parser.add_argument("--repeat", type=int, default=3, help="Fresh processes per module and mode.")
    args = parser.parse_args(argv)
    if args.command:
        time_commands(args.command, args.repeat)
        return
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
