"""A real run on local workers lands in DuckDB once, and stays once across restarts.

A coordinator and two workers (real processes) run benchmark and test tasks;
the aggregate API answers while they run; after the cluster stops, the
results file holds one row per attempt, sample and test case. Restarting the
coordinator on the same data dir replays the journal and backfills what the
file lacks (here: rows deleted by hand, as if the last flush had been lost)
without duplicating anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from dtf.client import Client
from dtf.local.cluster import ClusterSettings, LocalCluster
from dtf.testing.waiting import wait_for

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BATCH_SIZES = (1, 2, 4)
REPEATS = 3
TABLES = ("tasks", "attempts", "metric_samples", "test_cases")


def benchmark(batch_size: int) -> dict[str, Any]:
    return {
        "id": f"matmul-bs{batch_size}",
        "type": "benchmark",
        "config": {
            "entry_point": "matmul_bench:run",
            "python_path": [str(EXAMPLES)],
            "params": {"batch_size": batch_size, "size": 16, "repeats": REPEATS},
        },
        "labels": {"run_id": "nightly-1", "commit": "abc123", "model": "matmul16"},
    }


TEST_TASK = {
    "id": "sample-tests",
    "type": "test",
    "config": {"path": str(EXAMPLES / "test_sample.py")},
    "labels": {"run_id": "nightly-1", "commit": "abc123"},
}


def table_counts(path: Path) -> dict[str, int]:
    with duckdb.connect(str(path), read_only=True) as connection:
        return {
            table: connection.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            for table in TABLES
        }


def aggregated_count(client: Client) -> int:
    reply = client.aggregate_results(["model", "batch_size"], metric="latency_ms_median")
    return sum(group["count"] for group in reply["groups"])


def test_a_real_run_lands_in_duckdb_once_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    db_path = tmp_path / "results" / "run.duckdb"
    settings = ClusterSettings(
        data_dir, workers=2, slots=2, coordinator_args=("--db-path", str(db_path))
    )
    with LocalCluster(settings) as cluster, cluster.client() as client:
        ids = client.submit_many([*(benchmark(b) for b in BATCH_SIZES), TEST_TASK])
        tasks = client.wait(ids, timeout_s=90)
        assert {t["status"] for t in tasks} == {"completed"}
        wait_for(lambda: aggregated_count(client) == 3, 30, "the aggregate API to count 3")
        groups = client.aggregate_results(["model", "batch_size"], metric="latency_ms_median")
        exported = tmp_path / "samples.parquet"
        client.export_results(exported, table="metric_samples", file_format="parquet")

    assert [(g["model"], g["batch_size"], g["count"]) for g in groups["groups"]] == [
        ("matmul16", b, 1) for b in BATCH_SIZES
    ]
    assert all(g["min"] <= g["median"] <= g["max"] for g in groups["groups"])
    counts = table_counts(db_path)
    # Five metrics per benchmark; batch_size, size and repeats echo params and are left out.
    assert counts["metric_samples"] == 5 * len(BATCH_SIZES)
    assert counts["tasks"] == counts["attempts"] == len(ids)
    assert counts["test_cases"] >= 5
    assert pq.read_table(exported).num_rows == counts["metric_samples"]

    with duckdb.connect(str(db_path)) as connection:
        row = connection.execute(
            "SELECT run_id, commit, model, hardware_class, batch_size, unit, worker_id "
            "FROM metric_samples WHERE task_id = 'matmul-bs2' AND name = 'latency_ms_median'"
        ).fetchall()
        assert row[0][:6] == ("nightly-1", "abc123", "matmul16", "cpu", 2, "ms")
        assert row[0][6] in ("local-1", "local-2")
        [(runs,)] = connection.execute(
            "SELECT tasks FROM runs WHERE run_id = 'nightly-1'"
        ).fetchall()
        assert runs == len(ids)
        snapshots = connection.execute(
            "SELECT DISTINCT worker_id, status FROM worker_snapshots ORDER BY 1"
        ).fetchall()
        # Registered (online), then stopped before the coordinator (suspect).
        assert set(snapshots) == {
            (worker, status)
            for worker in ("local-1", "local-2")
            for status in ("online", "suspect")
        }
        # As if the last flush before a crash had been lost:
        for table in ("attempts", "metric_samples"):
            connection.execute(f"DELETE FROM {table} WHERE task_id = 'matmul-bs4'")

    with LocalCluster(settings) as cluster, cluster.client() as client:
        wait_for(lambda: aggregated_count(client) == 3, 30, "the backfill to restore matmul-bs4")
    assert table_counts(db_path) == counts
