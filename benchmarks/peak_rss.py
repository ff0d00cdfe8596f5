"""Peak memory of the running process, for the benchmarks' JSON results.

Standard library only: ``feast_pit.py`` and ``evidently_drift.py`` run as files inside their own venvs
(no churnops installed) and import this sibling file as ``peak_rss``; the rest import ``benchmarks.peak_rss``.
"""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident set in MB (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
