"""The demo's pure parts: the workload it submits, the events it reports, the checks it makes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dtf.core.model import TaskSpec
from dtf.demo.events import changes
from dtf.demo.summary import checks
from dtf.demo.workload import BATCH_SIZES, EXAMPLE_FILES, Workload, build_workload
from dtf.errors import NotFound


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    for name in EXAMPLE_FILES:
        (tmp_path / name).write_text(f"# {name}\n")
    return tmp_path


@pytest.fixture
def workload(examples: Path) -> Workload:
    return build_workload("demo-abc", examples)


def test_workload_specs_are_valid_and_ids_unique(workload: Workload) -> None:
    for spec in workload.all_specs:
        msgspec.convert(spec, TaskSpec)
    assert len(set(workload.task_ids)) == len(workload.task_ids)
    assert all(task_id.startswith("demo-abc-") for task_id in workload.task_ids)


def test_workload_shape(workload: Workload, examples: Path) -> None:
    by_id = {spec["id"]: spec for spec in workload.all_specs}
    assert workload.flaky not in workload.first_batch
    assert workload.flaky["retry_policy"]["retry_on_nonzero_exit"] is True
    assert by_id[workload.long_task_id]["priority"] < min(
        spec.get("priority", 5) for spec in workload.first_batch[1:]
    )
    assert set(workload.benchmark_ids) == set(BATCH_SIZES)
    report = by_id["demo-abc-bench-report"]
    assert sorted(report["dependencies"]) == sorted(workload.benchmark_ids.values())
    assert by_id["demo-abc-build"]["dependencies"] == ["demo-abc-prepare"]
    test_spec = by_id[workload.test_ids[0]]
    assert test_spec["config"]["source"] == "# test_sample.py\n"
    bench = by_id[workload.benchmark_ids[8]]["config"]
    assert bench["params"]["batch_size"] == 8
    assert bench["python_path"] == [str(examples.resolve())]


def test_missing_examples_are_named(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text("")
    with pytest.raises(
        NotFound, match=re.escape("test_with_failure.py, matmul_bench.py, flaky_once.sh")
    ):
        build_workload("r", tmp_path)


def attempt(number: int, worker: str, status: str = "running", **extra: Any) -> dict[str, Any]:
    return {"number": number, "worker_id": worker, "status": status, **extra}


def task(task_id: str, status: str, *attempts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "spec": {"name": task_id},
        "status": status,
        "attempts": list(attempts),
        **extra,
    }


def test_events_report_loss_and_recovery_once() -> None:
    running = task("long", "running", attempt(1, "w2"))
    lost = task("long", "pending", attempt(1, "w2", "lost", reason="lease expired"))
    recovered = task(
        "long", "running", attempt(1, "w2", "lost", reason="lease expired"), attempt(2, "w3")
    )
    assert changes({"long": running}, {"long": lost}) == [
        "long: attempt 1 on w2 lost (lease expired)"
    ]
    assert changes({"long": lost}, {"long": recovered}) == ["long: recovered, attempt 2 on w3"]
    assert changes({"long": recovered}, {"long": recovered}) == []


def test_events_report_a_failure_and_its_retry_seen_in_one_poll() -> None:
    before = task("flaky", "running", attempt(1, "w1"))
    after = task(
        "flaky", "running", attempt(1, "w1", "failed", failure="exit_nonzero"), attempt(2, "w1")
    )
    assert changes({"flaky": before}, {"flaky": after}) == [
        "flaky: attempt 1 on w1 failed (exit_nonzero)",
        "flaky: retried, attempt 2 on w1",
    ]


def test_events_report_failed_task_and_new_task_quietly() -> None:
    failed = task("x", "failed", status_reason="dependency y failed")
    assert changes({}, {"x": failed, "z": task("z", "pending")}) == [
        "x: task failed (dependency y failed)"
    ]


def finished(workload: Workload, victim: str = "local-2") -> dict[str, dict[str, Any]]:
    """Every task completed as the demo expects."""
    tasks = {
        task_id: task(task_id, "completed", attempt(1, "local-1", "succeeded"))
        for task_id in workload.task_ids
    }
    tasks[workload.flaky["id"]]["attempts"] = [
        attempt(1, "local-1", "failed", failure="exit_nonzero"),
        attempt(2, "local-3", "succeeded"),
    ]
    tasks[workload.long_task_id]["attempts"] = [
        attempt(1, victim, "lost", failure="worker_lost"),
        attempt(2, "local-3", "succeeded"),
    ]
    passing, failing = workload.test_ids
    tasks[passing]["attempts"][0]["outcome"] = {
        "test_cases": [{"node_id": "a", "outcome": "passed"}]
    }
    tasks[failing]["attempts"][0]["outcome"] = {
        "test_cases": [{"node_id": "b", "outcome": "failed"}]
    }
    for task_id in workload.benchmark_ids.values():
        tasks[task_id]["attempts"][0]["outcome"] = {"metrics": {"latency_ms": 1.0}}
    return tasks


def test_checks_pass_for_the_expected_run(workload: Workload) -> None:
    results = checks(finished(workload), workload, "local-2")
    assert all(check.passed for check in results), [c for c in results if not c.passed]


@pytest.mark.parametrize(
    ("spoil", "failing_check"),
    [
        (lambda w, t: t[w.flaky["id"]]["attempts"].pop(0), "flaky task"),
        (lambda w, t: t[w.long_task_id]["attempts"][-1].update(worker_id="local-2"), "long task"),
        (lambda w, t: t[w.long_task_id].update(status="failed"), "long task"),
        (lambda w, t: t[w.test_ids[1]]["attempts"][0].update(outcome={}), "failing tests"),
        (lambda w, t: t[w.benchmark_ids[64]]["attempts"][0].update(outcome={}), "benchmark"),
        (lambda w, t: t[w.task_ids[1]].update(status="cancelled"), "tasks completed"),
    ],
)
def test_checks_catch_what_went_wrong(workload: Workload, spoil: Any, failing_check: str) -> None:
    tasks = finished(workload)
    spoil(workload, tasks)
    failed = [c.description for c in checks(tasks, workload, "local-2") if not c.passed]
    assert failed
    assert all(failing_check in f or "tasks completed" in f for f in failed)
    assert any(failing_check in f for f in failed)
