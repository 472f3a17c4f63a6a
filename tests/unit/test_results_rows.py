"""Rows for the results file, built from real state records (no DuckDB)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dtf.analysis.units import metric_direction, metric_unit
from dtf.core.model import Outcome, TestCaseResult, TestOutcome
from dtf.core.records import TaskRecord
from dtf.results.rows import (
    attempt_rows,
    metric_values,
    task_row,
    worker_snapshot_row,
)
from dtf.testing.factories import StateDriver, capabilities, task_spec

A100 = {"vendor": "nvidia", "model": "A100-SXM4-80GB", "memory_gb": 80}


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("latency_ms", "ms"),
        ("latency_ms_median", "ms"),  # a statistic after the unit
        ("latency_ms_p90", "ms"),
        ("duration_s", "s"),
        ("warmup_seconds", "s"),
        ("matrices_per_s", "1/s"),
        ("tokens_per_sec", "1/s"),
        ("gflops", "GFLOP/s"),
        ("peak_memory_mb", "MB"),
        ("weights_gb", "GB"),
        ("gpu_util_pct", "%"),
        ("accuracy", ""),
        ("items", ""),  # ends in "ms" but not in "_ms"
    ],
)
def test_unit_comes_from_the_name(name: str, unit: str) -> None:
    assert metric_unit(name) == unit


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("latency_ms_median", "lower_is_better"),
        ("duration_s", "lower_is_better"),
        ("peak_memory_mb", "lower_is_better"),
        ("matrices_per_s", "higher_is_better"),
        ("gflops", "higher_is_better"),
        ("top1_accuracy", "higher_is_better"),
        ("loss", "two_sided"),  # unknown: a change either way is news
    ],
)
def test_direction_comes_from_the_name(name: str, direction: str) -> None:
    assert metric_direction(name) == direction


def test_param_echoes_and_non_numbers_are_not_measurements() -> None:
    metrics = {
        "latency_ms": [1.0, 2.0],
        "batch_size": 32,  # echoes the param: not a measurement
        "size": 64,  # differs from the param of that name: measured
        "note": "warm",
        "ok": True,
        "broken": float("nan"),
    }
    assert metric_values(metrics, {"batch_size": 32, "size": 128}) == [
        ("latency_ms", 0, 1.0),
        ("latency_ms", 1, 2.0),
        ("size", 0, 64.0),
    ]


def finished_benchmark(
    driver: StateDriver, outcome: Outcome, *, labels: dict[str, str], params: dict[str, Any]
) -> TaskRecord:
    driver.register("gpu-1", capabilities(hardware=["cpu", "cuda"], cpu_model="EPYC", gpus=[A100]))
    spec = task_spec(
        type="benchmark",
        name="resnet",
        config={"entry_point": "bench:run", "params": params},
        requirements={"hardware": ["cuda"]},
        labels=labels,
    )
    driver.submit(("t1", spec), at=100.0)
    driver.start("t1", at=101.0)
    driver.report("t1", outcome, at=105.0)
    return driver.state.tasks["t1"]


def test_a_benchmark_attempt_becomes_one_sample_per_repeat_with_its_dimensions(
    driver: StateDriver,
) -> None:
    outcome = Outcome(metrics={"latency_ms": [3.0, 4.0, 5.0], "gflops": 9.5}, duration_s=4.0)
    labels = {"run_id": "nightly-7", "git_commit": "abc123", "model": "resnet50"}
    params = {"batch_size": 32, "precision": "fp16", "size": 256}
    task = finished_benchmark(driver, outcome, labels=labels, params=params)

    rows = attempt_rows(task, task.attempts[0], driver.state.workers["gpu-1"])

    samples = [(s["name"], s["sample_index"], s["value"], s["unit"]) for s in rows.metric_samples]
    assert samples == [
        ("latency_ms", 0, 3.0, "ms"),
        ("latency_ms", 1, 4.0, "ms"),
        ("latency_ms", 2, 5.0, "ms"),
        ("gflops", 0, 9.5, "GFLOP/s"),
    ]
    first = rows.metric_samples[0]
    assert {k: first[k] for k in ("run_id", "commit", "model", "hardware_class")} == {
        "run_id": "nightly-7",
        "commit": "abc123",  # git_commit when there is no commit label
        "model": "resnet50",  # the label wins over the task name
        "hardware_class": "cuda",
    }
    assert (first["device_model"], first["batch_size"], first["precision"]) == (
        "A100-SXM4-80GB",
        32,
        "fp16",
    )
    assert json.loads(first["config"]) == {"size": 256}
    assert (first["worker_id"], first["recorded_at"], first["task_id"]) == ("gpu-1", 105.0, "t1")
    assert rows.attempt["status"] == "succeeded"
    assert rows.attempt["metric_samples"] == 4
    assert rows.attempt["duration_s"] == 4.0


def test_recovery_patch_is_what_the_attempt_ran_with(driver: StateDriver) -> None:
    task = finished_benchmark(
        driver, Outcome(metrics={"latency_ms": 1.0}), labels={}, params={"batch_size": 32}
    )
    attempt = task.attempts[0]
    attempt.params_patch = {"batch_size": 16}

    [sample] = attempt_rows(task, attempt, driver.state.workers["gpu-1"]).metric_samples
    assert sample["batch_size"] == 16
    assert sample["model"] == "resnet"  # no label, no param: the task's name
    assert (sample["run_id"], sample["commit"]) == (None, None)


def test_a_test_task_gives_one_row_per_test_case_on_the_cpu(driver: StateDriver) -> None:
    driver.register("w1", capabilities(cpu_model="Xeon"))
    driver.submit(("t1", task_spec(type="test", config={"path": "tests/test_x.py"})), at=1.0)
    driver.start("t1", at=2.0)
    cases = [
        TestCaseResult("tests/test_x.py::test_a", TestOutcome.PASSED, 0.5),
        TestCaseResult("tests/test_x.py::test_b", TestOutcome.FAILED, 1.5, "assert 1 == 2"),
    ]
    driver.report("t1", Outcome(exit_code=1, test_cases=cases), at=3.0)
    task = driver.state.tasks["t1"]

    rows = attempt_rows(task, task.attempts[0], driver.state.workers["w1"])

    assert [(t["node_id"], t["outcome"], t["duration_s"]) for t in rows.test_cases] == [
        ("tests/test_x.py::test_a", "passed", 0.5),
        ("tests/test_x.py::test_b", "failed", 1.5),
    ]
    assert rows.test_cases[1]["message"] == "assert 1 == 2"
    assert rows.test_cases[0]["hardware_class"] == "cpu"
    assert rows.test_cases[0]["model"] == "tests/test_x.py"  # no name: what it runs
    assert rows.attempt["exit_code"] == 1


def test_task_row_holds_the_final_status_and_labels(driver: StateDriver) -> None:
    task = finished_benchmark(
        driver, Outcome(metrics={}), labels={"run_id": "r1", "commit": "c1"}, params={}
    )
    row = task_row(task)
    assert (row["status"], row["attempts"], row["run_id"], row["commit"]) == (
        "completed",
        1,
        "r1",
        "c1",
    )
    assert json.loads(row["labels"]) == {"run_id": "r1", "commit": "c1"}


def test_worker_snapshot_has_score_slots_and_hardware(driver: StateDriver) -> None:
    driver.register("gpu-1", capabilities(hardware=["cpu", "cuda"], gpus=[A100]), slots=4)
    worker = driver.state.workers["gpu-1"]
    row = worker_snapshot_row(
        worker,
        journal_seq=7,
        recorded_at=50.0,
        event="status",
        reason="registered",
        half_life_s=600,
    )
    assert row["health_score"] == 100.0  # nothing against it yet
    assert (row["slots"], row["busy_slots"], row["status"]) == (4, 0, "online")
    assert row["hardware"] == ["cpu", "cuda"]
    assert row["gpu_models"] == ["A100-SXM4-80GB"]
