"""How many CPU threads torch should use: the cores that are free when the command starts, shared between the
processes it runs on this machine. Measured in benchmarks/threads.py: on an idle 2-core machine two threads are
fastest; with one other job running, a second thread makes the run 2.6 times slower."""

import os
import statistics
import time


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def others_running(samples: int = 5, interval: float = 0.01) -> int | None:
    """Runnable tasks besides this one, from /proc/loadavg's instantaneous count (Linux); None where unknown.
    The load averages would lag a job started a minute ago; the count does not."""
    counts = []
    try:
        for _ in range(samples):
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
            time.sleep(interval)
    except (OSError, ValueError, IndexError):
        return None
    return round(statistics.median(counts))


def choose(processes: int = 1) -> int:
    """Threads for each of ``processes`` processes of this command: its share of the cores, less the busy ones."""
    cores = usable_cores()
    others = others_running()
    if others is None:
        return 1  # nothing known: one thread is never far from the best, and never the worst
    return max(1, min(cores // max(1, processes), cores - others))
