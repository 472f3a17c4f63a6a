"""Dask distributed: a LocalCluster of W single-threaded worker processes running ``true``."""

from __future__ import annotations

import logging
import subprocess
import time

from distributed import Client, LocalCluster, wait


def run_true(index: int) -> int:
    return subprocess.run(["true"], check=True).returncode


def measure_dask(workers: int, tasks: int, timeout_s: float) -> float:
    """Tasks per second from ``client.map`` until ``gather`` returns."""
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster, timeout=timeout_s) as client,
    ):
        client.gather(client.map(run_true, range(workers * 2), pure=False))
        started = time.perf_counter()
        futures = client.map(run_true, range(tasks), pure=False)
        wait(futures, timeout=timeout_s)
        client.gather(futures)
        return tasks / (time.perf_counter() - started)
