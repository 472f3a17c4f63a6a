"""Results ingestion cost: CPU microseconds per finished task, by stage.

A real ``State`` (one worker) runs ``--tasks`` command tasks in rounds of
``--round-tasks``: submit, start and report an outcome (``--metrics`` numbers
each, default none, as the throughput benchmark's ``true`` tasks). Each
round's events go to ``ResultsIngester.on_events`` in batches of
``--events-per-call`` commands' events, as the bus publishes them, then
``flush`` writes the round. Building the state is not timed. Timed, with
``time.process_time`` (CPU of the whole process, DuckDB's threads included,
so other processes on the machine do not count):

- collect: ``on_events`` (rows from the state, on the event loop);
- to_arrow: ``flush`` minus the store's ``insert`` (pending rows to Arrow,
  and the online regression check when there are metrics);
- insert: ``ResultsStore.insert`` (the DuckDB write).

"start" is the CPU of opening the file and the first flush (one worker
snapshot) in this process: one-off costs such as DuckDB importing pandas.

Figures are medians over rounds, per task; the first round is shown apart.
Then the file is
filled with synthetic attempts up to each ``--scale`` size and a few more
rounds show how the insert cost grows with the attempts already in the file.
Prints figures; asserts nothing.

    .venv/bin/python bench/ingest.py [--tasks 10000] [--round-tasks 500] \
        [--scale 10000,100000,500000] [--metrics 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from dtf.core import commands as c
from dtf.core.events import Event
from dtf.core.model import Capabilities, LeaseRef, Outcome, TaskSpec
from dtf.core.state import State, StateConfig
from dtf.results.ingest import ResultsIngester
from dtf.results.schema import TABLES
from dtf.results.store import ArrowBatch, ResultsStore

FILL_BATCH = 50_000


class TimedStore(ResultsStore):
    """The real store, adding up the CPU time its inserts take."""

    insert_s = 0.0

    def insert(self, batch: ArrowBatch) -> dict[str, int]:
        started = time.process_time()
        try:
            return super().insert(batch)
        finally:
            self.insert_s += time.process_time() - started


class Workload:
    """A state with one worker that runs command tasks to completion on demand."""

    def __init__(self, metrics: int) -> None:
        self.state = State(StateConfig())
        self.metrics = {f"metric_{n}": float(n) for n in range(metrics)}
        self.spec = msgspec.convert({"type": "command", "config": {"command": ["true"]}}, TaskSpec)
        self.next_task = 0
        self.initial = self.state.apply(
            c.RegisterWorker(0.0, "w1", "s1", Capabilities(cpu_model="Xeon"), 1_000_000, [])
        )

    def round(self, tasks: int, per_call: int) -> list[list[Event]]:
        """Run ``tasks`` more tasks; their events, ``per_call`` commands' worth per list."""
        ids = [f"task-{self.next_task + n}" for n in range(tasks)]
        self.next_task += tasks
        now = float(self.next_task)
        calls = [self.state.apply(c.SubmitTasks(now, [c.NewTask(i, self.spec) for i in ids]))]
        commands = [command for task_id in ids for command in self._run(task_id, now)]
        for start in range(0, len(commands), per_call):
            events: list[Event] = []
            for command in commands[start : start + per_call]:
                events.extend(self.state.apply(command))
            calls.append(events)
        return calls

    def _run(self, task_id: str, now: float) -> Iterator[c.Command]:
        lease = self.state.tasks[task_id].lease
        assert lease is not None, f"{task_id} was not assigned"
        ref = LeaseRef(task_id, lease.attempt, lease.fence)
        yield c.TaskStarted(now, "w1", ref)
        yield c.ReportOutcome(now, "w1", ref, Outcome(exit_code=0, metrics=self.metrics))


def measure_round(
    ingester: ResultsIngester, store: TimedStore, workload: Workload, options: argparse.Namespace
) -> dict[str, float]:
    calls = workload.round(options.round_tasks, options.events_per_call)
    started = time.process_time()
    for events in calls:
        ingester.on_events(events)
    collected = time.process_time()
    store.insert_s = 0.0
    ingester.flush()
    flushed = time.process_time()
    per_task = 1e6 / options.round_tasks
    return {
        "collect_us": (collected - started) * per_task,
        "to_arrow_us": (flushed - collected - store.insert_s) * per_task,
        "insert_us": store.insert_s * per_task,
        "total_us": (flushed - started) * per_task,
    }


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}


def fill(store: ResultsStore, first: int, count: int) -> None:
    """``count`` synthetic finished attempts (no samples), as a long run leaves in the file."""
    for start in range(first, first + count, FILL_BATCH):
        size = min(FILL_BATCH, first + count - start)
        schema = TABLES["attempts"].arrow_schema
        columns = {
            "task_id": pa.array([f"filler-{n}" for n in range(start, start + size)]),
            "attempt": pa.array([1] * size, pa.int32()),
            "status": pa.array(["succeeded"] * size),
            "finished_at": pa.array([1.7e9 + n for n in range(start, start + size)]),
        }
        arrays = [columns.get(f.name, pa.nulls(size, f.type)) for f in schema]
        store.insert(ArrowBatch({"attempts": pa.Table.from_arrays(arrays, schema=schema)}))


def run(options: argparse.Namespace, directory: Path) -> dict[str, Any]:
    workload = Workload(options.metrics)
    started = time.process_time()
    store = TimedStore.open(directory / "results.duckdb")
    assert isinstance(store, TimedStore)
    ingester = ResultsIngester(store, lambda: workload.state)
    ingester.on_events(workload.initial)
    ingester.flush()
    figures: dict[str, Any] = {"start_ms": (time.process_time() - started) * 1e3}
    figures["first_round"] = measure_round(ingester, store, workload, options)
    rounds = [
        measure_round(ingester, store, workload, options)
        for _ in range(max(1, options.tasks // options.round_tasks - 1))
    ]
    figures["steady"] = medians(rounds)
    figures["scale"] = {}
    filled = 0
    for size in options.scale:
        fill(store, filled, size - filled)
        filled = size
        scaled = [measure_round(ingester, store, workload, options) for _ in range(5)]
        figures["scale"][size] = medians(scaled)
    store.close()
    return figures


def parse_sizes(text: str) -> list[int]:
    return sorted(int(size) for size in text.split(",") if size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks in the steady phase")
    parser.add_argument("--round-tasks", type=int, default=500, help="tasks per flush")
    parser.add_argument("--events-per-call", type=int, default=50, help="commands per on_events")
    parser.add_argument("--metrics", type=int, default=0, help="metrics in each outcome")
    parser.add_argument(
        "--scale", type=parse_sizes, default=[10_000, 100_000, 500_000],
        help="attempts already in the file at which to measure again (comma-separated)",
    )  # fmt: skip
    parser.add_argument("--dir", type=Path, default=None, help="where to put the file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    options = parser.parse_args()
    started = time.process_time()
    with tempfile.TemporaryDirectory(dir=options.dir) as directory:
        figures = run(options, Path(directory))
    figures["options"] = {
        "tasks": options.tasks,
        "round_tasks": options.round_tasks,
        "events_per_call": options.events_per_call,
        "metrics": options.metrics,
    }
    figures["bench_cpu_s"] = time.process_time() - started
    if options.json:
        print(json.dumps(figures, indent=2))
        return
    print_figures(figures)


def print_figures(f: dict[str, Any]) -> None:
    o = f["options"]
    print(f"{o['tasks']:,} command tasks, {o['metrics']} metrics each, flushed every "
          f"{o['round_tasks']} tasks; CPU us per task (process time, medians over rounds)")  # fmt: skip
    print(f"start      open + first flush {f['start_ms']:.0f} ms CPU")
    print(f"{'':25} {'collect':>8} {'to_arrow':>9} {'insert':>8} {'total':>8}")
    rows = [("first round", f["first_round"]), ("steady", f["steady"])]
    rows += [(f"{size:,} attempts in file", s) for size, s in f["scale"].items()]
    for label, s in rows:
        print(f"{label:25} {s['collect_us']:8.1f} {s['to_arrow_us']:9.1f} "
              f"{s['insert_us']:8.1f} {s['total_us']:8.1f}")  # fmt: skip
    print(f"bench CPU {f['bench_cpu_s']:.1f} s")


if __name__ == "__main__":
    main()
