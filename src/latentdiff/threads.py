"""CPU threads: how many the process may really use.

torch sizes its thread pool by the machine's cores. A container limited by a CPU quota, or a
process pinned to fewer CPUs, then runs more threads than it has CPUs; and beside a busy neighbour
every parallel region waits for its slowest thread, the one that shares a CPU with the neighbour,
while OpenMP (libgomp) threads that are done spin at the barrier. On the 2-core machine here that
made sampling 4× slower beside a busy Python loop and 11× beside another torch process, where one
thread lost only 0–30 % (benchmarks/bench_threads.py, docs/training.md). The command line
therefore starts with as many threads as there are CPUs that no other process keeps busy.
"""

import math
import os
import time
from pathlib import Path


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (cgroup v2
    cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us), at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cpus, math.ceil(quota)) if quota else cpus)


def _cgroup_quota() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        root = Path("/sys/fs/cgroup/cpu")
        quota = int((root / "cpu.cfs_quota_us").read_text())
        return None if quota <= 0 else quota / int((root / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def busy_cpus(window: float = 0.2) -> float:
    """CPUs that other processes keep busy: the machine's non-idle time over `window` seconds, in
    CPUs, from /proc/stat (this process sleeps meanwhile); 0 where /proc/stat cannot be read."""
    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(fields[:8]), fields[3] + fields[4]  # total, idle + iowait (jiffies)

    first = sample()
    time.sleep(window)
    second = sample()
    if first is None or second is None or second[0] <= first[0]:
        return 0.0
    total, idle = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * (total - idle) / total


def default_threads() -> int:
    """OMP_NUM_THREADS when set, else the CPUs this process may use that no other process keeps
    busy, at least 1."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    cpus = available_cpus()
    return max(1, cpus - round(busy_cpus())) if cpus > 1 else 1


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to `threads`, else `default_threads()`; returns the number."""
    import torch

    threads = threads or default_threads()
    torch.set_num_threads(threads)
    return threads
