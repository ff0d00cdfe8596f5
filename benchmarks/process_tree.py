"""Run a command and sample its whole process tree: wall time, peak summed RSS, peak single process, load.

``/usr/bin/time -v`` reports one process's peak RSS; the demo's work happens in the Dagster daemon's
run subprocesses, so this samples the summed RSS of the command and every descendant (psutil) every
``--interval`` seconds, plus the 1-minute load average, and prints a summary (and a JSON line) at the end.

    .venv/bin/python -m benchmarks.process_tree --interval 5 -- .venv/bin/churnops demo --scale full

The command's own output passes through unchanged; the summary goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import psutil

from benchmarks.tools import require_tool


def tree_rss(root: psutil.Process) -> tuple[int, int, str]:
    """Summed RSS of ``root`` and its descendants, the largest single RSS and that process's name."""
    total, largest, name = 0, 0, ""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, ""
    for proc in procs:
        try:
            rss = proc.memory_info().rss
            cmd = proc.cmdline()
            label = " ".join([os.path.basename(cmd[0]), *cmd[1:5]])[:120] if cmd else proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += rss
        if rss > largest:
            largest, name = rss, label
    return total, largest, name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interval", type=float, default=5.0, help="Seconds between samples.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The command (after --).")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    require_tool(command[0], "give the command as a path or a program on PATH")
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    proc = subprocess.Popen(command)
    root = psutil.Process(proc.pid)
    peak_total, peak_single, peak_name, loads = 0, 0, "", []
    while proc.poll() is None:
        total, single, name = tree_rss(root)
        if total > peak_total:
            peak_total = total
        if single > peak_single:
            peak_single, peak_name = single, name
        loads.append(os.getloadavg()[0])
        time.sleep(args.interval)
    wall = time.perf_counter() - started
    summary = {
        "command": " ".join(command),
        "exit_code": proc.returncode,
        "wall_seconds": round(wall, 1),
        "peak_tree_rss_gb": round(peak_total / 1e9, 2),
        "peak_process_rss_gb": round(peak_single / 1e9, 2),
        "peak_process": peak_name,
        "load_1m_start": round(load_start, 2),
        "load_1m_mean": round(sum(loads) / len(loads), 2) if loads else None,
        "load_1m_max": round(max(loads), 2) if loads else None,
        "samples": len(loads),
    }
    print(
        f"\nwall {wall / 60:.1f} min, exit {proc.returncode}; peak RSS of the process tree "
        f"{summary['peak_tree_rss_gb']} GB (largest single process {summary['peak_process_rss_gb']} GB: "
        f"{peak_name}); 1-min load start {summary['load_1m_start']}, mean {summary['load_1m_mean']}, "
        f"max {summary['load_1m_max']}",
        file=sys.stderr,
    )
    print(json.dumps(summary), file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
