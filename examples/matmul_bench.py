"""A real benchmark for dtf ``benchmark`` tasks: batched float32 matrix multiply.

Submit it as ``{"type": "benchmark", "config": {"entry_point": "matmul_bench:run",
"python_path": ["examples"], "params": {"batch_size": 32, "size": 256}}}``.
Each repeat multiplies ``batch_size`` pairs of ``size x size`` matrices in one
``numpy.matmul`` call; the first call is a warm-up and is not measured.
"""

from __future__ import annotations

import time

import numpy as np


def run(batch_size: int = 32, size: int = 256, repeats: int = 20) -> dict[str, float]:
    if batch_size < 1 or size < 1 or repeats < 1:
        raise ValueError(
            f"batch_size, size and repeats must be at least 1, got {batch_size}, {size}, {repeats}"
        )
    rng = np.random.default_rng(seed=0)
    left = rng.standard_normal((batch_size, size, size), dtype=np.float32)
    right = rng.standard_normal((batch_size, size, size), dtype=np.float32)
    np.matmul(left, right)
    latencies_s = np.array([_timed_matmul(left, right) for _ in range(repeats)])
    median_s = float(np.median(latencies_s))
    flops_per_batch = 2.0 * size**3 * batch_size
    return {
        "latency_ms_median": median_s * 1e3,
        "latency_ms_p90": float(np.percentile(latencies_s, 90)) * 1e3,
        "latency_ms_min": float(latencies_s.min()) * 1e3,
        "matrices_per_s": batch_size / median_s,
        "gflops": flops_per_batch / median_s / 1e9,
        "batch_size": batch_size,
        "size": size,
        "repeats": repeats,
    }


def _timed_matmul(left: np.ndarray, right: np.ndarray) -> float:
    started = time.perf_counter()
    np.matmul(left, right)
    return time.perf_counter() - started
