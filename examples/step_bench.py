"""A benchmark whose speed you set: latencies drawn around ``STEP_BENCH_CENTER_MS``.

For trying regression detection and run comparison on a known answer. The
centre comes from the task's environment (``config.env``), not its params,
because params are part of a result's series: a different centre param would
be a different benchmark, while a different centre in the environment plays
a code change that made the same benchmark slower. ``STEP_BENCH_NOISE`` is
the relative spread (default 0.01) and ``STEP_BENCH_SEED`` seeds the draw.

    {"type": "benchmark", "config": {"entry_point": "step_bench:run",
     "python_path": ["examples"], "params": {"repeats": 10},
     "env": {"STEP_BENCH_CENTER_MS": "11.0"}}, "labels": {"commit": "abc"}}
"""

from __future__ import annotations

import os
import random


def run(repeats: int = 10) -> dict[str, list[float]]:
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    center_ms = float(os.environ.get("STEP_BENCH_CENTER_MS", "10.0"))
    noise = float(os.environ.get("STEP_BENCH_NOISE", "0.01"))
    draw = random.Random(os.environ.get("STEP_BENCH_SEED", "0"))
    return {"latency_ms": [center_ms * (1.0 + draw.gauss(0.0, noise)) for _ in range(repeats)]}
