"""Where a finished demo's time went, read back from its Dagster instance.

    .venv/bin/python -m benchmarks.demo_time --home .churnops

For every job the daemon (or the demo, in process) ran: how many runs, and per run on average the
**launch** (run created -> the run process started executing: queue, code-location load in a fresh
process), the **run** (start -> end) and, inside it, the time before the first step (resource set-up),
the steps themselves and the slowest steps over all runs of the job. The gap between one run's end and
the next run's creation (sensor ticks, the demo landing the next week's files) is summed as **between
runs**. It reads the instance only: run it after `make demo` (or `churnops demo`) has finished.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class JobTime:
    runs: int = 0
    launch: float = 0.0
    run: float = 0.0
    setup: float = 0.0
    steps: float = 0.0
    by_step: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def row(self, name: str, top: int) -> dict[str, Any]:
        n = max(self.runs, 1)
        slowest = sorted(self.by_step.items(), key=lambda kv: -kv[1])[:top]
        return {
            "job": name,
            "runs": self.runs,
            "total_s": round(self.launch + self.run, 1),
            "launch_s_per_run": round(self.launch / n, 1),
            "run_s_per_run": round(self.run / n, 1),
            "setup_s_per_run": round(self.setup / n, 1),
            "steps_s_per_run": round(self.steps / n, 1),
            "slowest_steps_s_per_run": {k: round(v / n, 1) for k, v in slowest},
        }


def demo_time(dagster_home: Path, top: int = 5) -> dict[str, Any]:
    """Per-job launch / run / step seconds of every finished run in the instance at ``dagster_home``."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    instance = dg.DagsterInstance.get()
    records = sorted(instance.get_run_records(), key=lambda r: r.create_timestamp)
    jobs: dict[str, JobTime] = defaultdict(JobTime)
    between = 0.0
    previous_end: float | None = None
    for record in records:
        run = record.dagster_run
        stats = instance.get_run_stats(run.run_id)
        if not (stats.start_time and stats.end_time):
            continue  # not finished
        created = record.create_timestamp.timestamp()
        steps = [
            (s.step_key, float(s.start_time), float(s.end_time))
            for s in instance.get_run_step_stats(run.run_id)
            if s.start_time and s.end_time
        ]
        job = jobs[run.job_name]
        job.runs += 1
        job.launch += max(stats.start_time - created, 0.0)
        job.run += stats.end_time - stats.start_time
        if steps:
            job.setup += min(start for _, start, _ in steps) - stats.start_time
        for key, start, end in steps:
            job.steps += end - start
            job.by_step[key] += end - start
        if previous_end is not None and created > previous_end:
            between += created - previous_end
        previous_end = max(previous_end or 0.0, stats.end_time)
    rows = [jobs[name].row(name, top) for name in sorted(jobs, key=lambda n: -(jobs[n].launch + jobs[n].run))]
    return {"jobs": rows, "between_runs_s": round(between, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path(".churnops"), help="the demo's CHURNOPS_HOME")
    parser.add_argument("--top", type=int, default=5, help="slowest steps shown per job")
    args = parser.parse_args(argv)
    dagster_home = args.home / "dagster"
    if not dagster_home.is_dir():
        raise SystemExit(f"no Dagster instance under {args.home} (run `make demo` first)")
    result = demo_time(dagster_home.resolve(), args.top)
    for row in result["jobs"]:
        print(
            f"{row['job']:22s} {row['runs']:3d} runs, {row['total_s']:7.1f} s: per run launch "
            f"{row['launch_s_per_run']:5.1f} s + run {row['run_s_per_run']:6.1f} s (set-up "
            f"{row['setup_s_per_run']:4.1f} s, steps {row['steps_s_per_run']:6.1f} s); slowest steps per run: "
            + ", ".join(f"{k} {v} s" for k, v in row["slowest_steps_s_per_run"].items())
        )
    print(f"between runs (sensor ticks, the demo landing the next week): {result['between_runs_s']} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
