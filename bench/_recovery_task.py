"""The benchmark task of ``recovery.py``: it works for ``work_s`` seconds,
allocating memory as a real workload grows, and runs out of memory above
batch size 8, as a model on a small device does (like examples/oom_bench.py)."""

from __future__ import annotations

import time

MEMORY_LIMIT_BATCH = 8
BLOCK_BYTES = 1 << 20
BLOCK_INTERVAL_S = 0.005


def run(batch_size: int = 4, work_s: float = 0.2) -> dict[str, float]:
    if batch_size > MEMORY_LIMIT_BATCH:
        raise MemoryError(
            f"out of memory: batch_size={batch_size} needs more than this device has "
            f"(fits up to {MEMORY_LIMIT_BATCH})"
        )
    deadline = time.perf_counter() + work_s
    blocks = []
    while time.perf_counter() < deadline:
        blocks.append(bytearray(BLOCK_BYTES))
        time.sleep(BLOCK_INTERVAL_S)
    return {"batch_size": batch_size, "allocated_mib": len(blocks) * BLOCK_BYTES / 2**20}
