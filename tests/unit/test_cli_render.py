"""What ``dtf task show``, ``dtf workers`` and ``dtf submit --wait`` print, from real record encodings."""

from __future__ import annotations

from typing import Any

import msgspec
from rich.console import Console

from dtf.cli.render import failure_text, hardware_text, tasks_table, workers_table
from dtf.cli.task_view import any_problems, poll_summary, print_task, result_line, spec_summary
from dtf.core.model import Capabilities, FailureKind, GpuInfo, HardwareClass, Outcome, TaskSpec
from dtf.core.model import TestCaseResult as CaseResult
from dtf.core.model import TestOutcome as CaseOutcome
from dtf.core.records import (
    AttemptRecord,
    AttemptStatus,
    TaskRecord,
    TaskStatus,
    WorkerRecord,
)


def encode(record: msgspec.Struct) -> dict[str, Any]:
    encoded: dict[str, Any] = msgspec.to_builtins(record)
    return encoded


def task_with_history(status: TaskStatus = TaskStatus.COMPLETED) -> dict[str, Any]:
    spec = TaskSpec(type="test", config={"path": "/src/test_x.py", "args": ["-x"]}, name="suite")
    lost = AttemptRecord(1, "w1", 1, 100.0, status=AttemptStatus.LOST, finished_at=105.0)
    lost.failure, lost.reason = FailureKind.WORKER_LOST, "lease expired"
    lost.retry_delay_s = 1.5
    failed_outcome = Outcome(
        failure=FailureKind.EXIT_NONZERO, exit_code=3, stderr_tail="ImportError: no numpy\n"
    )
    failed = AttemptRecord(2, "w2", 2, 107.0, status=AttemptStatus.FAILED, outcome=failed_outcome)
    cases = [
        CaseResult("test_x.py::test_a", CaseOutcome.PASSED, 0.1),
        CaseResult("test_x.py::test_b", CaseOutcome.FAILED, 0.2, "assert 1 == 2"),
    ]
    done = AttemptRecord(
        3,
        "w3",
        3,
        110.0,
        status=AttemptStatus.SUCCEEDED,
        outcome=Outcome(exit_code=1, duration_s=0.5, test_cases=cases, metrics={"rows": 7}),
    )
    record = TaskRecord("t-1", spec, 1, 99.0, status, attempts=[lost, failed, done])
    return encode(record)


def render(renderable_printer: Any, *args: Any) -> str:
    console = Console(record=True, width=200)
    renderable_printer(console, *args)
    return console.export_text()


def test_task_show_prints_full_history_tests_metrics_and_stderr() -> None:
    text = render(print_task, task_with_history())
    for expected in (
        "suite (test)",
        "/src/test_x.py -x",
        "completed",
        "lease expired",
        "worker_lost",
        "exit_nonzero",
        "1.5s",  # retry delay of attempt 1
        "tests: 1 failed, 1 passed",
        "failing: test_x.py::test_b",
        "rows",
        "stderr of attempt 2 (last failed)",
        "ImportError: no numpy",
    ):
        assert expected in text, expected
    for worker in ("w1", "w2", "w3"):
        assert worker in text


def test_task_show_explains_waiting() -> None:
    task = encode(
        TaskRecord(
            "t-2", TaskSpec(type="command", config={"command": "x"}), 1, 0.0, TaskStatus.PENDING
        )
    )
    task["waiting"] = {"summary": "cuda: 0 of 3 workers", "constraints": []}
    text = render(print_task, task)
    assert "waiting    cuda: 0 of 3 workers" in text


def test_result_line_and_problems_for_failing_tests() -> None:
    task = task_with_history()
    line = result_line(task)
    assert line.startswith("t-1 completed on w3 (attempt 3, 500ms)")
    assert "tests: 1 failed, 1 passed" in line
    assert "failing: test_x.py::test_b" in line
    assert any_problems([task]) == [("t-1", "1 failing tests: test_x.py::test_b")]


def test_failed_and_cancelled_tasks_are_problems_with_their_reason() -> None:
    failed = task_with_history(TaskStatus.FAILED)
    failed["status_reason"] = "retries exhausted"
    cancelled = encode(
        TaskRecord(
            "t-3",
            TaskSpec(type="command", config={"command": "x"}),
            2,
            0.0,
            TaskStatus.CANCELLED,
            status_reason="cancelled by user",
        )
    )
    assert dict(any_problems([failed, cancelled])) == {
        "t-1": "failed: retries exhausted",
        "t-3": "cancelled: cancelled by user",
    }
    assert "retries exhausted" in result_line(failed)


def test_poll_summary_counts_statuses() -> None:
    assert poll_summary({"running": 2, "pending": 1}) == "waiting for 3 tasks: 1 pending, 2 running"


def test_spec_summary_per_type() -> None:
    assert spec_summary({"type": "command", "config": {"command": ["ls", "-l"]}}) == "ls -l"
    bench = {"type": "benchmark", "config": {"entry_point": "m:f", "params": {"b": 1}}}
    assert spec_summary(bench) == 'm:f {"b": 1}'


def test_tasks_table_shows_last_worker_and_attempt_count() -> None:
    console = Console(record=True, width=200)
    console.print(tasks_table([task_with_history()], now=100.0))
    text = console.export_text()
    assert "t-1" in text
    assert "w3" in text
    assert "│ 3 " in text


def test_workers_table_marks_declared_hardware_and_gpus() -> None:
    capabilities = Capabilities(
        hardware=[HardwareClass.CPU],
        declared_hardware=[HardwareClass.CUDA],
        cpu_count=8,
        memory_gb=31.4,
        gpus=[GpuInfo("nvidia", "A100", 80.0, 8.0, declared=True)],
    )
    worker = encode(WorkerRecord("w1", capabilities, 4, 0.0, 95.0, "s", leases=["t-1"]))
    console = Console(record=True, width=250)
    console.print(workers_table([worker], now=100.0))
    text = console.export_text()
    assert "cpu, cuda (declared)" in text
    assert "A100 (80 GB, cc 8) (declared)" in text
    assert "1/4" in text
    assert "8 cpu, 31.4 GB" in text
    assert "5.0s ago" in text


def test_hardware_text_when_declared_class_also_listed_as_hardware() -> None:
    caps = {"hardware": ["cpu", "webgpu"], "declared_hardware": ["webgpu"]}
    assert hardware_text(caps) == "cpu, webgpu (declared)"


def test_an_injected_fault_is_marked_in_the_attempts_table() -> None:
    outcome = encode(Outcome(failure=FailureKind.CRASHED, signal=15, injected_fault="cuda_error"))
    assert failure_text({"failure_type": "cuda_error"}, outcome) == (
        "cuda_error [yellow](injected cuda_error)[/yellow]"
    )
    survived = encode(Outcome(injected_fault="disconnect"))
    assert failure_text({}, survived) == "ok [yellow](injected disconnect)[/yellow]"
    assert failure_text({"failure": "timeout"}, {}) == "timeout"
