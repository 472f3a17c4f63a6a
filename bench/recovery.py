"""Recovery under injected faults: progressive recovery next to ``minimal``.

One workload of N short tasks runs twice, each time on a fresh local cluster
(a coordinator and W workers with S slots, workers restarted when they die)
whose workers inject real faults at ``--rate`` with ``--seed``: once with the
default (``progressive``) recovery, once with recovery ``minimal`` (one
delayed retry, then escalate). Faults follow from (seed, task id, attempt),
so both runs meet the same fault on the same attempt of the same task.
Prints figures (a rich table, or JSON with ``--json``); asserts nothing.

    .venv/bin/python bench/recovery.py [--tasks 300] [--rate 0.1] [--seed 1]
                                       [--workers 3] [--slots 2] [--json]

The workload (drawn from the seed): half ``sleep 0.1-0.3`` commands, half
Python benchmarks that allocate memory for 0.1-0.3 s, of which a fifth are
submitted with batch size 16 and a tenth with 32 while only 8 fits (the OOM
ladder halves it). Each task: timeout 5 s, ``max_retries`` 3, retry delay
0.5 s doubling. Circuit breakers reset after 10 s instead of 300 s (a local
run is minutes long); everything else is the coordinator's default.

Figures, per run:

- completion rate: completed tasks / all tasks; the others failed with a reason.
- attempts per task: mean and max over all tasks.
- time lost to failures, in task-seconds summed over tasks (it can exceed the
  wall time, as tasks run side by side): *failed run time*, the sum over every
  attempt that did not succeed (failed or lost) of finished_at minus
  started_at (assigned_at when it never started), plus *retry wait*, the sum
  over every attempt after a task's first of its assigned_at minus the
  previous attempt's finished_at (retry delay, backoff and queueing for a
  slot). All times are the coordinator's own.
- wall time: from submitting the batch until every task is finished.
- injected faults by kind, from the workers' fault log, and the failure types
  the classifier gave the last attempt of each task that failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dtf.local import ClusterSettings, LocalCluster
from dtf.worker.faults import FaultSettings

BENCH_DIR = Path(__file__).resolve().parent
MODES = ("progressive", "minimal")
POLL_INTERVAL_S = 0.25
TASK_TIMEOUT_S = 5.0
RETRY_POLICY = {"max_retries": 3, "retry_delay_seconds": 0.5}
BREAKER_RESET_S = 10.0
TERMINAL = ("completed", "failed", "cancelled")
stderr = Console(stderr=True)


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=300, help="tasks per run (N)")
    parser.add_argument("--rate", type=float, default=0.1, help="fault rate per attempt")
    parser.add_argument("--seed", type=int, default=1, help="seed of the workload and faults")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (W)")
    parser.add_argument("--slots", type=int, default=2, help="concurrent tasks per worker (S)")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on each run, s")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    options = parser.parse_args()
    if options.tasks < 1 or options.workers < 1 or options.slots < 1:
        parser.error("--tasks, --workers and --slots must be at least 1")
    if not 0.0 <= options.rate <= 1.0:
        parser.error(f"--rate must be between 0 and 1, got {options.rate}")
    return options


def workload(tasks: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(f"recovery-bench:{seed}")
    specs = []
    for number in range(tasks):
        work_s = round(rng.uniform(0.1, 0.3), 3)
        spec: dict[str, Any] = {
            "id": f"rec-{number:04d}",
            "timeout_seconds": TASK_TIMEOUT_S,
            "retry_policy": RETRY_POLICY,
        }
        if rng.random() < 0.5:
            spec.update(type="command", config={"command": f"sleep {work_s}"})
        else:
            draw = rng.random()
            batch_size = 32 if draw < 0.1 else 16 if draw < 0.3 else 4
            config = {
                "entry_point": "_recovery_task:run",
                "params": {"batch_size": batch_size, "work_s": work_s},
                "python_path": [str(BENCH_DIR)],
            }
            spec.update(type="benchmark", config=config)
        specs.append(spec)
    return specs


def run_mode(mode: str, options: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    config = work_dir / f"recovery-{mode}.yaml"
    config.write_text(f"mode: {mode}\n", encoding="utf-8")
    settings = ClusterSettings(
        data_dir=work_dir / mode,
        workers=options.workers,
        slots=options.slots,
        lease_timeout_s=5.0,
        log_level="warning",
        restart_workers=True,
        faults=FaultSettings(rate=options.rate, seed=options.seed),
        coordinator_args=(
            *("--recovery-config", str(config)),
            *("--circuit-breaker-reset-time", str(BREAKER_RESET_S)),
        ),
    )
    specs = workload(options.tasks, options.seed)
    with LocalCluster(settings, report=report) as cluster:
        with cluster.client(timeout_s=60) as client:
            started = time.monotonic()
            client.submit_many(specs)
            wait_until_finished(client, len(specs), options.timeout)
            wall_s = time.monotonic() - started
            listed = client.list(limit=len(specs))
        faults = Counter(str(fault.kind) for fault in cluster.injected_faults())
        restarts = cluster.supervisor.restarts if cluster.supervisor else 0
    return figures(listed, wall_s, faults, restarts)


def report(line: str) -> None:
    stderr.print(f"[dim]{line}[/dim]", soft_wrap=True, highlight=False)


def wait_until_finished(client: Any, total: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        counts = client.status()["tasks"]
        if sum(counts.get(status, 0) for status in TERMINAL) >= total:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {timeout_s:g}s: task counts {counts}")
        time.sleep(POLL_INTERVAL_S)


def time_lost(task: dict[str, Any]) -> tuple[float, float]:
    """(failed run time, retry wait) of one task, in seconds; see the module docstring."""
    attempts = task["attempts"]
    failed_run = sum(
        a["finished_at"] - (a["started_at"] or a["assigned_at"])
        for a in attempts
        if a["status"] != "succeeded" and a["finished_at"] is not None
    )
    retry_wait = sum(
        later["assigned_at"] - earlier["finished_at"]
        for earlier, later in itertools.pairwise(attempts)
    )
    return failed_run, retry_wait


def figures(
    tasks: list[dict[str, Any]], wall_s: float, faults: Counter[str], restarts: int
) -> dict[str, Any]:
    statuses = Counter(task["status"] for task in tasks)
    attempts = [len(task["attempts"]) for task in tasks]
    lost = [time_lost(task) for task in tasks]
    failed = [task for task in tasks if task["status"] == "failed"]
    final_types = Counter(
        (task["attempts"][-1].get("failure_type") or "none") if task["attempts"] else "never ran"
        for task in failed
    )
    return {
        "tasks": len(tasks),
        "completed": statuses["completed"],
        "failed": statuses["failed"],
        "completion_rate": statuses["completed"] / len(tasks),
        "attempts_per_task_mean": sum(attempts) / len(tasks),
        "attempts_per_task_max": max(attempts),
        "failed_run_s": sum(run for run, _ in lost),
        "retry_wait_s": sum(wait for _, wait in lost),
        "time_lost_s": sum(run + wait for run, wait in lost),
        "wall_s": wall_s,
        "injected_faults": dict(faults.most_common()),
        "worker_restarts": restarts,
        "final_failure_types": dict(final_types.most_common()),
    }


def counts_text(counts: dict[str, int]) -> str:
    return "\n".join(f"{name} {count}" for name, count in counts.items()) or "-"


def table(results: dict[str, dict[str, Any]], options: argparse.Namespace) -> Table:
    out = Table(
        "figure",
        *(f"recovery {mode}" for mode in results),
        title=f"recovery under injected faults: {options.tasks} tasks, fault rate "
        f"{options.rate:g}, seed {options.seed}, {options.workers} workers x {options.slots} slots",
    )
    rows = [
        (
            "completed / failed / total",
            lambda r: f"{r['completed']} / {r['failed']} / {r['tasks']}",
        ),
        ("completion rate", lambda r: f"{r['completion_rate']:.1%}"),
        (
            "attempts per task: mean (max)",
            lambda r: f"{r['attempts_per_task_mean']:.2f} ({r['attempts_per_task_max']})",
        ),
        ("time lost to failures (task-s)", lambda r: f"{r['time_lost_s']:.1f}"),
        ("  of which failed run time", lambda r: f"{r['failed_run_s']:.1f}"),
        ("  of which retry wait", lambda r: f"{r['retry_wait_s']:.1f}"),
        ("wall time (s)", lambda r: f"{r['wall_s']:.1f}"),
        ("injected faults by kind", lambda r: counts_text(r["injected_faults"])),
        ("worker restarts", lambda r: str(r["worker_restarts"])),
        ("failed tasks: final failure type", lambda r: counts_text(r["final_failure_types"])),
    ]
    for name, cell in rows:
        out.add_row(name, *(cell(result) for result in results.values()), end_section=True)
    return out


def main() -> int:
    options = parse_options()
    results = {}
    with tempfile.TemporaryDirectory(prefix="dtf-bench-recovery-") as work_dir:
        for mode in MODES:
            stderr.print(f"[dim]running {options.tasks} tasks with recovery {mode} ...[/dim]")
            results[mode] = run_mode(mode, options, Path(work_dir))
    if options.json:
        print(json.dumps({"options": vars(options), "results": results}, indent=2))
    else:
        Console().print(table(results, options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
