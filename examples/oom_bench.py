"""A benchmark that runs out of memory above a batch size, as a model on a
small GPU does: dtf's recovery halves the batch until it fits.

    dtf submit --benchmark examples/oom_bench.py:run --param batch_size=32 --wait
"""

from __future__ import annotations

import time

MEMORY_LIMIT_BATCH = 8


def run(batch_size: int = 32, size: int = 64) -> dict[str, float]:
    if batch_size > MEMORY_LIMIT_BATCH:
        raise MemoryError(
            f"out of memory: batch_size={batch_size} needs more than this device has "
            f"(fits up to {MEMORY_LIMIT_BATCH})"
        )
    started = time.perf_counter()
    total = sum(i * j for i in range(size) for j in range(batch_size))
    elapsed_ms = (time.perf_counter() - started) * 1000
    return {"batch_size": batch_size, "latency_ms": elapsed_ms, "checksum": total}
