"""Measurement helpers shared by the benchmarks: CPU of this process and of the dev server,
and percentiles."""

from __future__ import annotations

import math
import os
import resource
from pathlib import Path


def process_cpu() -> float:
    """CPU seconds of this process, all threads (worker, client, anything in-process)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_pid() -> int | None:
    """The dev server: the child process of this one, found through /proc (Linux)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().rsplit(")", 1)
        except (OSError, ValueError):
            continue
        if "temporal" in name and int(rest.split()[1]) == os.getpid():
            return int(stat.parent.name)
    return None


def server_cpu(pid: int | None) -> float:
    """CPU seconds of process ``pid`` (NaN when unknown)."""
    if pid is None:
        return math.nan
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def system_load() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared: say under what load)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"
