"""Results store speed: metric rows per second into the DuckDB file, and an
aggregation over all of them by three dimensions.

Synthetic attempts of ``--samples-per-attempt`` samples of one metric
(``latency_ms``) are built as Arrow tables and written through
``ResultsStore.insert`` (the coordinator's path: attempt rows and their
samples in one transaction, attempts already in the file dropped first) in
batches of ``--batch-rows``. Only the inserts are timed, not building the
data. Then one batch is written again (every attempt known: nothing added),
the file is closed and reopened, and ``aggregate`` runs by model, hardware
and batch size with count, mean, median, p90, p95, p99, stddev, min, max.
Prints figures; asserts nothing.

    .venv/bin/python bench/results_store.py [--rows 10000000] [--batch-rows 250000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dtf.results.queries import Filters, aggregate
from dtf.results.schema import TABLES
from dtf.results.store import ArrowBatch, ResultsStore

DIMENSIONS: dict[str, list[Any]] = {
    "model": [f"model-{n}" for n in range(20)],
    "hardware_class": ["cpu", "cuda", "rocm", "webgpu"],
    "device_model": ["EPYC 7763", "A100-SXM4-80GB", "MI250X", "chromium 131", "H100"],
    "batch_size": [1, 2, 4, 8, 16, 32],
    "precision": ["fp32", "fp16", "int8"],
    "worker_id": [f"worker-{n}" for n in range(16)],
    "run_id": [f"nightly-{n}" for n in range(50)],
    "commit": [f"{n:07x}" for n in range(50)],
}
AGGREGATE_BY = ["model", "hardware", "batch_size"]


def synthetic_batch(
    rng: np.random.Generator, first_task: int, attempts: int, per: int
) -> ArrowBatch:
    """``attempts`` attempts of ``per`` samples each, dimensions drawn per attempt."""
    task_ids = pa.array([f"task-{n}" for n in range(first_task, first_task + attempts)])
    per_attempt = {
        name: pc.take(pa.array(values), pa.array(rng.integers(0, len(values), attempts)))
        for name, values in DIMENSIONS.items()
    }
    finished = pa.array(1.7e9 + np.arange(first_task, first_task + attempts, dtype=np.float64))
    attempt_columns = {
        "task_id": task_ids,
        "attempt": pa.array(np.ones(attempts, dtype=np.int32)),
        "status": pa.array(["succeeded"] * attempts),
        "finished_at": finished,
        "metric_samples": pa.array(np.full(attempts, per, dtype=np.int32)),
        **per_attempt,
    }
    repeat = pa.array(np.repeat(np.arange(attempts), per))
    samples = {name: pc.take(column, repeat) for name, column in per_attempt.items()}
    sample_columns = {
        "task_id": pc.take(task_ids, repeat),
        "attempt": pa.array(np.ones(attempts * per, dtype=np.int32)),
        "name": pa.array(["latency_ms"] * (attempts * per)),
        "sample_index": pa.array(np.tile(np.arange(per, dtype=np.int32), attempts)),
        "value": pa.array(rng.lognormal(1.0, 0.3, attempts * per)),
        "unit": pa.array(["ms"] * (attempts * per)),
        "recorded_at": pc.take(finished, repeat),
        "task_seq": pa.array(np.repeat(np.arange(first_task, first_task + attempts), per)),
        **samples,
    }
    return ArrowBatch(
        {
            "attempts": _conform("attempts", attempt_columns, attempts),
            "metric_samples": _conform("metric_samples", sample_columns, attempts * per),
        }
    )


def _conform(table: str, columns: dict[str, pa.Array], rows: int) -> pa.Table:
    """All of the table's columns in its order and types; those not generated are NULL."""
    schema = TABLES[table].arrow_schema
    arrays = [
        columns[f.name].cast(f.type) if f.name in columns else pa.nulls(rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def measure_ingest(store: ResultsStore, options: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    per = options.samples_per_attempt
    attempts_per_batch = max(1, options.batch_rows // per)
    inserted, elapsed, first_task, last = 0, 0.0, 0, None
    while inserted < options.rows:
        last = synthetic_batch(rng, first_task, attempts_per_batch, per)
        started = time.perf_counter()
        inserted += store.insert(last)["metric_samples"]
        elapsed += time.perf_counter() - started
        first_task += attempts_per_batch
    assert last is not None
    started = time.perf_counter()
    again = store.insert(last)
    repeat_s = time.perf_counter() - started
    return {
        "metric_rows": inserted,
        "batch_rows": attempts_per_batch * per,
        "ingest_s": elapsed,
        "ingest_rows_per_s": inserted / elapsed,
        "repeat_batch_rows_added": sum(again.values()),
        "repeat_batch_s": repeat_s,
    }


def measure_aggregate(path: Path, runs: int) -> dict[str, Any]:
    store = ResultsStore.open(path, read_only=True)
    timings, groups = [], []
    with store.reader() as cursor:
        for _ in range(runs):
            started = time.perf_counter()
            groups = aggregate(cursor, AGGREGATE_BY, Filters(metric="latency_ms"))
            timings.append(time.perf_counter() - started)
    store.close()
    return {
        "aggregate_by": AGGREGATE_BY,
        "aggregate_groups": len(groups),
        "aggregate_rows": sum(g["count"] for g in groups),
        "aggregate_first_s": timings[0],
        "aggregate_median_s": statistics.median(timings),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="metric rows to write")
    parser.add_argument("--batch-rows", type=int, default=250_000, help="metric rows per insert")
    parser.add_argument("--samples-per-attempt", type=int, default=100)
    parser.add_argument("--aggregate-runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    options = parser.parse_args()
    figures: dict[str, Any] = {"load_average_1m_before": os.getloadavg()[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(dir=options.dir) as directory:
        path = Path(directory) / "results.duckdb"
        store = ResultsStore.open(path)
        figures.update(measure_ingest(store, options))
        store.close()
        figures["file_mb"] = path.stat().st_size / 1e6
        figures.update(measure_aggregate(path, options.aggregate_runs))
    if options.json:
        print(json.dumps(figures, indent=2))
        return
    print_figures(figures)


def print_figures(f: dict[str, Any]) -> None:
    print(f"machine    {f['cpus']} CPUs, load average {f['load_average_1m_before']:.1f} at start "
          "(other processes take their share)")  # fmt: skip
    print(
        f"ingest     {f['metric_rows']:,} metric rows in batches of {f['batch_rows']:,}: "
        f"{f['ingest_s']:.2f} s, {f['ingest_rows_per_s']:,.0f} rows/s "
        f"(file {f['file_mb']:.0f} MB)"
    )
    print(
        f"repeat     one batch written again: {f['repeat_batch_rows_added']} rows added, "
        f"{f['repeat_batch_s'] * 1000:.0f} ms"
    )
    print(f"aggregate  {f['aggregate_rows']:,} rows by {','.join(f['aggregate_by'])} "
          f"({f['aggregate_groups']} groups; count, mean, median, p90, p95, p99, stddev, min, "
          f"max): first {f['aggregate_first_s']:.3f} s, median {f['aggregate_median_s']:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
