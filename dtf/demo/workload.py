"""The demo's tasks: commands with a dependency, pytest files, a benchmark sweep,
a flaky script that needs one retry, and a long task whose worker gets killed.

Ids are prefixed with a run id so a demo can run against a data dir that
already holds tasks from earlier runs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtf.errors import NotFound

Spec = dict[str, Any]

BATCH_SIZES = (1, 8, 32, 64)
LONG_TASK_SECONDS = 8
EXAMPLE_FILES = ("test_sample.py", "test_with_failure.py", "matmul_bench.py", "flaky_once.sh")


@dataclass(frozen=True)
class Workload:
    """The first batch (everything but the flaky task) and the flaky task, sent after the kill.

    The flaky task goes in last so that it never runs on the worker the demo
    kills: its history then shows exactly one failed attempt and one retry.
    """

    run_id: str
    first_batch: list[Spec]
    flaky: Spec
    long_task_id: str
    benchmark_ids: dict[int, str]
    test_ids: tuple[str, ...]

    @property
    def all_specs(self) -> list[Spec]:
        return [*self.first_batch, self.flaky]

    @property
    def task_ids(self) -> list[str]:
        return [spec["id"] for spec in self.all_specs]


def find_examples(examples_dir: Path) -> Path:
    missing = [name for name in EXAMPLE_FILES if not (examples_dir / name).is_file()]
    if missing:
        raise NotFound(
            f"the demo needs {', '.join(missing)} in {examples_dir}; run it from a dtf "
            "source checkout or pass --examples-dir"
        )
    return examples_dir.resolve()


def _task(run_id: str, key: str, name: str, task_type: str, config: Spec, **extra: Any) -> Spec:
    labels = {"run_id": run_id, "demo": key}
    return {
        "id": f"{run_id}-{key}",
        "name": name,
        "type": task_type,
        "config": config,
        "labels": labels,
        **extra,
    }


def command_specs(run_id: str) -> list[Spec]:
    prepare = _task(
        run_id,
        "prepare",
        "prepare inputs",
        "command",
        {"command": "echo preparing inputs; sleep 1; echo ready"},
    )
    build = _task(
        run_id,
        "build",
        "build (after prepare)",
        "command",
        {"command": "echo building with the prepared inputs"},
        dependencies=[prepare["id"]],
    )
    host = _task(
        run_id,
        "whoami",
        "report the worker",
        "command",
        {"command": "echo running as task $DTF_TASK_ID attempt $DTF_ATTEMPT on $(hostname)"},
    )
    return [prepare, build, host]


def pytest_file_specs(run_id: str, examples: Path) -> list[Spec]:
    specs = []
    for key, file_name in (
        ("tests-pass", "test_sample.py"),
        ("tests-fail", "test_with_failure.py"),
    ):
        path = examples / file_name
        config = {"path": str(path), "args": [], "source": path.read_text(encoding="utf-8")}
        specs.append(_task(run_id, key, f"pytest {file_name}", "test", config))
    return specs


def benchmark_specs(run_id: str, examples: Path) -> list[Spec]:
    specs = [
        _task(
            run_id,
            f"bench-bs{size}",
            f"matmul batch_size={size}",
            "benchmark",
            {
                "entry_point": "matmul_bench:run",
                "params": {"batch_size": size, "repeats": 10},
                "python_path": [str(examples)],
            },
        )
        for size in BATCH_SIZES
    ]
    report = _task(
        run_id,
        "bench-report",
        "report (after all benchmarks)",
        "command",
        {"command": f"echo all {len(specs)} matmul benchmarks finished"},
        dependencies=[spec["id"] for spec in specs],
    )
    return [*specs, report]


def build_workload(run_id: str, examples_dir: Path) -> Workload:
    examples = find_examples(examples_dir)
    long_task = _task(
        run_id,
        "long",
        f"long task (sleep {LONG_TASK_SECONDS})",
        "command",
        {"command": f"sleep {LONG_TASK_SECONDS}; echo long task done"},
        priority=0,
    )
    flaky_script = shlex.quote(str(examples / "flaky_once.sh"))
    flaky = _task(
        run_id,
        "flaky",
        "flaky script (fails once)",
        "command",
        {"command": f"sh {flaky_script}"},
        retry_policy={"max_retries": 2, "retry_delay_seconds": 1.0, "retry_on_nonzero_exit": True},
    )
    benchmarks = benchmark_specs(run_id, examples)
    tests = pytest_file_specs(run_id, examples)
    return Workload(
        run_id=run_id,
        first_batch=[long_task, *command_specs(run_id), *tests, *benchmarks],
        flaky=flaky,
        long_task_id=long_task["id"],
        benchmark_ids={size: f"{run_id}-bench-bs{size}" for size in BATCH_SIZES},
        test_ids=tuple(spec["id"] for spec in tests),
    )
