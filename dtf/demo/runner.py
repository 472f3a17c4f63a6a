"""``dtf demo``: start a local cluster, run the workload, kill a worker, summarise.

The demo submits everything but the flaky task, waits until the long task
runs, SIGKILLs the worker running it (with all its children, as if the
machine died), then submits the flaky task and polls until every task is
finished, printing each retry and recovery as it happens. The long task's
lease expires after the short lease timeout and it is run again elsewhere.

With ``faults`` (``dtf demo --fault-injection``) the workers also inject
real faults, each printed as it strikes; dead workers are restarted, and the
checks and summary are those of ``faults.py``; breakers reset after 10 s and
health scores recover with a 20 s half-life, so both are seen to work.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TimeElapsedColumn

from dtf.client import TERMINAL_STATUSES, Client
from dtf.demo.events import changes
from dtf.demo.faults import fault_checks, faults_table, recovery_line
from dtf.demo.summary import Check, checks, print_summary
from dtf.demo.workload import Workload, build_workload
from dtf.local import ClusterSettings, LocalCluster
from dtf.worker.faults import FaultSettings, InjectedFault

Task = dict[str, Any]
Say = Callable[[str], None]

POLL_INTERVAL_S = 0.3
# With faults injected, breakers open and workers get quarantined: let them
# come back within the demo's minutes rather than a fleet's.
FAULT_DEMO_COORDINATOR_ARGS = ("--circuit-breaker-reset-time", "10", "--health-half-life", "20")
LONG_TASK_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DemoSettings:
    data_dir: Path
    examples_dir: Path
    port: int = 0
    workers: int = 3
    slots: int = 2
    lease_timeout_s: float = 5.0
    timeout_s: float = 300.0
    keep_running: bool = False
    faults: FaultSettings | None = None


@dataclass
class DemoRun:
    """What the polling loop knows: the latest view of each submitted task, and the kill."""

    workload: Workload
    tasks: dict[str, Task] = field(default_factory=dict)
    victim: str | None = None
    flaky_submitted: bool = False
    injected: list[InjectedFault] = field(default_factory=list)
    notices: collections.deque[str] = field(default_factory=collections.deque)
    faulted: bool = False

    @property
    def is_finished(self) -> bool:
        return self.flaky_submitted and all(
            t["status"] in TERMINAL_STATUSES for t in self.tasks.values()
        )


class DemoInterrupted(Exception):
    """SIGINT or SIGTERM arrived while the workload was running."""


def poll(client: Client, run: DemoRun, task_ids: list[str]) -> dict[str, Task]:
    """Fresh views of the unfinished tasks; finished ones are kept as they were."""
    latest = dict(run.tasks)
    unfinished = [
        task_id
        for task_id in task_ids
        if task_id not in latest or latest[task_id]["status"] not in TERMINAL_STATUSES
    ]
    if unfinished:
        latest.update((task["id"], task) for task in client.lookup(unfinished))
    return latest


def kill_long_task_worker(cluster: LocalCluster, run: DemoRun, say: Say) -> None:
    long_task = run.tasks[run.workload.long_task_id]
    victim = long_task["attempts"][-1]["worker_id"]
    say(f"[bold]{long_task['spec']['name']} is running on {victim}[/bold]")
    pid = cluster.kill_worker(victim)
    run.victim = victim
    say(
        f"[bold red]killed worker {victim}[/bold red] (SIGKILL to pid {pid} and its children); "
        f"its lease expires in {cluster.settings.lease_timeout_s:g}s, then the task is recovered"
    )


def step(client: Client, cluster: LocalCluster, run: DemoRun, started: float, say: Say) -> None:
    """One poll: report changes, kill the worker once the long task runs, send the flaky task."""
    sent = run.workload.all_specs if run.flaky_submitted else run.workload.first_batch
    latest = poll(client, run, [spec["id"] for spec in sent])
    say_news(cluster, run, say)
    for line in changes(run.tasks, latest):
        say(line)
    run.tasks = latest
    if run.flaky_submitted:
        return
    long_status = run.tasks[run.workload.long_task_id]["status"]
    waited_too_long = time.monotonic() - started > LONG_TASK_START_TIMEOUT_S
    if long_status == "running":
        kill_long_task_worker(cluster, run, say)
    elif long_status in TERMINAL_STATUSES or waited_too_long:
        say(f"[red]the long task did not run in time ({long_status}); no worker was killed[/red]")
    else:
        return
    client.submit(run.workload.flaky)
    run.flaky_submitted = True
    say("submitted the flaky task (fails on its first attempt, retried on non-zero exit)")


def say_news(cluster: LocalCluster, run: DemoRun, say: Say) -> None:
    """Worker restarts and injected faults since the last poll."""
    while run.notices:
        say(f"[yellow]{run.notices.popleft()}[/yellow]")
    injected = cluster.injected_faults()
    for fault in injected[len(run.injected) :]:
        say(f"[magenta]{fault.describe()}[/magenta]")
    run.injected = injected


def drive(
    client: Client,
    cluster: LocalCluster,
    run: DemoRun,
    settings: DemoSettings,
    stop: threading.Event,
) -> bool:
    """Run the workload to the end; False when the demo's time limit ran out first."""
    total = len(run.workload.task_ids)
    columns = (SpinnerColumn(), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, "tasks finished") as progress:
        bar = progress.add_task("tasks", total=total)
        say = progress.console.print
        client.submit_many(run.workload.first_batch)
        say(f"submitted {len(run.workload.first_batch)} tasks to {cluster.url}")
        started = time.monotonic()
        while not run.is_finished:
            if stop.is_set():
                raise DemoInterrupted
            if time.monotonic() - started > settings.timeout_s:
                say(f"[red]gave up after {settings.timeout_s:g}s[/red]")
                return False
            step(client, cluster, run, started, say)
            finished = sum(1 for t in run.tasks.values() if t["status"] in TERMINAL_STATUSES)
            progress.update(bar, completed=finished)
            stop.wait(POLL_INTERVAL_S)
    return True


def run_demo(settings: DemoSettings, console: Console, stop: threading.Event) -> int:
    """Run the demo; 0 when every check passed, 1 otherwise, 130 when interrupted."""
    run_id = f"demo-{uuid.uuid4().hex[:6]}"
    run = DemoRun(
        build_workload(run_id, settings.examples_dir), faulted=settings.faults is not None
    )
    cluster = LocalCluster(
        ClusterSettings(
            data_dir=settings.data_dir,
            workers=settings.workers,
            port=settings.port,
            slots=settings.slots,
            lease_timeout_s=settings.lease_timeout_s,
            restart_workers=settings.faults is not None,
            faults=settings.faults,
            coordinator_args=FAULT_DEMO_COORDINATOR_ARGS if settings.faults else (),
        ),
        report=run.notices.append,
    )
    try:
        with console.status(f"starting a coordinator and {settings.workers} workers..."):
            cluster.start()
        console.print(f"cluster up at {cluster.url}; data in {cluster.data_dir}")
        with cluster.client() as client:
            in_time = drive(client, cluster, run, settings, stop)
            where = data_locations(cluster, client.status())
        run.injected = cluster.injected_faults()
        restarts = cluster.supervisor.restarts if cluster.supervisor else 0
        passed = report(console, run, in_time, where, restarts)
        if settings.keep_running:
            keep_running(cluster, console, stop, run.workload.long_task_id)
        return 0 if passed else 1
    except DemoInterrupted:
        console.print("interrupted: stopping the cluster")
        return 130
    finally:
        cluster.stop()


def report(
    console: Console, run: DemoRun, in_time: bool, where: dict[str, str], restarts: int
) -> bool:
    """Print the summary and the checks; True when every check passed."""
    results = evaluate(run, in_time)
    if run.flaky_submitted:
        extra: list[RenderableType] = []
        if run.faulted:
            extra = [faults_table(run.tasks, run.injected)]
            extra.append(recovery_line(run.tasks, run.injected, restarts))
        print_summary(console, run.tasks, run.workload, results, where, extra)
    else:
        for check in results:
            console.print(f"FAIL {check.description}", markup=False)
    passed = all(check.passed for check in results)
    console.print("[green]demo passed[/green]" if passed else "[red]demo failed[/red]")
    return passed


def evaluate(run: DemoRun, in_time: bool) -> list[Check]:
    in_time_check = Check("every task finished within the demo's time limit", in_time)
    if not run.flaky_submitted:
        return [in_time_check]
    if run.faulted:
        return [in_time_check, *fault_checks(run.tasks, run.injected)]
    return [in_time_check, *checks(run.tasks, run.workload, run.victim)]


def data_locations(cluster: LocalCluster, status: dict[str, Any]) -> dict[str, str]:
    return {
        "data dir": str(cluster.data_dir),
        "journal": str(status.get("journal", cluster.data_dir)),
        "logs": str(cluster.logs_dir),
        "admin key": str(cluster.admin_key_path),
    }


def keep_running(
    cluster: LocalCluster, console: Console, stop: threading.Event, task_id: str
) -> None:
    console.rule("the cluster keeps running; Ctrl-C stops it")
    for line in cluster.usage_lines():
        console.print(line, markup=False, soft_wrap=True)
    console.print(
        f"  dtf task show {task_id}   # the task whose worker was killed",
        markup=False,
        soft_wrap=True,
    )
    while not stop.wait(1.0):
        pass
