"""The physical limit: W plain processes spawning ``true`` back to back, no scheduler.

Each process runs ``subprocess.run(["true"])`` in a loop, which is exactly what
the Celery and Dask tasks do, so the ratio to this limit is the cost of
scheduling alone.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import time
from multiprocessing.synchronize import Barrier

from _procs import BenchError

TIMEOUT_S = 600.0


def spawn_true(count: int, start_line: Barrier) -> None:
    start_line.wait(timeout=TIMEOUT_S)
    for _ in range(count):
        subprocess.run(["true"], check=True)


def measure_limit(workers: int, tasks: int) -> float:
    """Tasks per second of ``workers`` processes sharing ``tasks`` spawns."""
    context = multiprocessing.get_context("spawn")
    start_line = context.Barrier(workers + 1)
    shares = [tasks // workers + (1 if index < tasks % workers else 0) for index in range(workers)]
    processes = [context.Process(target=spawn_true, args=(share, start_line)) for share in shares]
    for process in processes:
        process.start()
    try:
        start_line.wait(timeout=TIMEOUT_S)
        started = time.perf_counter()
        for process in processes:
            process.join(timeout=TIMEOUT_S)
        elapsed = time.perf_counter() - started
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
    if any(process.exitcode != 0 for process in processes):
        raise BenchError(f"a baseline process failed: exit codes {[p.exitcode for p in processes]}")
    return tasks / elapsed
