"""A real run with a planted slowdown: the online check, `dtf results compare` and
`dtf results regressions` find it between the right commits.

A coordinator and two workers (real processes) run ``examples/step_bench.py``
once per commit, one commit after the other: commits c01-c06 (run ``before``)
at 10 ms, c07-c12 (run ``after``) and c13-c15 (run ``again``) at 11 ms. The
centre is set through the task's environment, so all fifteen are one series.
The ``dtf`` command runs as a subprocess against the running coordinator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dtf.client import Client
from dtf.errors import NotFound
from dtf.local.cluster import ClusterSettings, LocalCluster

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REPEATS = 5
COMMAND_TIMEOUT_S = 90
RUNS = (
    ("before", range(1, 7), 10.0),
    ("after", range(7, 13), 11.0),
    ("again", range(13, 16), 11.0),
)


def step_benchmark(run_id: str, commit: str, center_ms: float) -> dict[str, Any]:
    return {
        "type": "benchmark",
        "config": {
            "entry_point": "step_bench:run",
            "python_path": [str(EXAMPLES)],
            "params": {"repeats": REPEATS},
            "env": {"STEP_BENCH_CENTER_MS": str(center_ms), "STEP_BENCH_SEED": commit},
        },
        "labels": {"run_id": run_id, "commit": commit, "model": "step"},
    }


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def sample_count(client: Client) -> int:
    reply = client.aggregate_results(["model"], metric="latency_ms")
    return sum(group["count"] for group in reply["groups"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    settings = ClusterSettings(tmp_path_factory.mktemp("analysis-cluster"), workers=2, slots=1)
    with LocalCluster(settings) as running, running.client() as client:
        submitted = 0
        for run_id, commits, center_ms in RUNS:
            for number in commits:
                # One at a time, so the series is in commit order.
                [task_id] = client.submit_many(
                    [step_benchmark(run_id, f"c{number:02d}", center_ms)]
                )
                [task] = client.wait([task_id], timeout_s=60)
                assert task["status"] == "completed", task
                submitted += 1
        expected = submitted * REPEATS
        wait_for(lambda: sample_count(client) == expected, 30, f"{expected} samples in DuckDB")
        yield running


def dtf(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    env.update(COLUMNS="200", DTF_COORDINATOR=cluster.url, DTF_API_KEY=cluster.admin_key)
    result = subprocess.run(
        [sys.executable, "-m", "dtf.cli", "results", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def dtf_json(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(dtf(cluster, *args, "--json").stdout)


def verdict(cluster: LocalCluster, run_a: str, run_b: str) -> str:
    [metric] = dtf_json(cluster, "compare", run_a, run_b)["metrics"]
    return str(metric["comparison"]["verdict"])


def test_compare_calls_the_slower_run_slower_and_equal_runs_unchanged(
    cluster: LocalCluster,
) -> None:
    assert verdict(cluster, "before", "after") == "regressed"
    assert verdict(cluster, "after", "before") == "improved"
    assert verdict(cluster, "after", "again") == "no change"
    text = dtf(cluster, "compare", "before", "after").stdout
    assert "slower" in text and "+10." in text


def test_regressions_name_the_commit_range_of_the_step(cluster: LocalCluster) -> None:
    report = dtf_json(cluster, "regressions", "--metric", "latency_ms", "--since", "1h")
    [group] = report["groups"]
    assert (group["last_good_key"], group["first_bad_key"]) == ("c06", "c07")
    [alert] = group["alerts"]
    assert alert["kind"] == "regression"
    assert dict(alert["labels"])["model"] == "step"
    assert "c06..c07" in dtf(cluster, "regressions").stdout


def test_the_online_check_stored_and_logged_one_alert(cluster: LocalCluster) -> None:
    with cluster.client() as client:
        [alert] = client.regression_alerts()
    assert (alert["last_good_key"], alert["first_bad_key"]) == ("c06", "c07")
    assert alert["times_seen"] >= 1
    log = (cluster.logs_dir / "coordinator.log").read_text(encoding="utf-8")
    warned = [line for line in log.splitlines() if "WARNING" in line and "regression:" in line]
    assert len(warned) == 1 and "between c06 and c07" in warned[0], warned


def test_the_other_analyses_answer_and_errors_name_the_problem(cluster: LocalCluster) -> None:
    [trend] = dtf_json(cluster, "trends", "--metric", "latency_ms")["trends"]
    assert trend["trend"]["points"] == 15 * REPEATS
    assert dtf_json(cluster, "flaky")["flaky"] == []
    assert dtf_json(cluster, "anomalies")["groups"][-1]["subject"] == "workers"
    with cluster.client() as client, pytest.raises(NotFound, match="'nope'"):
        client.compare_runs("before", "nope")
