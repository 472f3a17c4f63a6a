"""The coordinator's results ingester: from applied events to the results file.

How this works: the ingester subscribes to the command bus. For each applied
batch of events it reads the state *at that moment* (on the event loop, so
nothing changes under it) and turns finished attempts, tasks that became
terminal and worker status or health changes into rows, keyed in a pending
buffer. A background thread writes the buffer to the store as one Arrow
batch every ``flush_interval_s`` or as soon as ``max_pending_rows`` rows
wait, so the bus never waits for DuckDB. Bigger, rarer batches cost less per
row (DuckDB's cost per insert is mostly fixed), and a reader never sees the
file behind: ``fresh_reader`` writes what is pending before it hands out a
cursor, so a query includes every attempt applied before it began.

A journal replay at start-up publishes no events, so ``backfill`` compares
the restored state with the file and writes every terminal task and
finished attempt the file lacks (a crash between the journal and the last
flush loses nothing). The store drops attempts it already has, so the
overlap of backfill and the live stream never duplicates a row.

After each written batch with metric samples, the online regression check
(``alerts.py``) runs on the writer thread, after the write, so the bus never
waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from dtf.core.events import (
    AttemptFinished,
    Event,
    TaskStatusChanged,
    WorkerHealthChanged,
    WorkerStatusChanged,
)
from dtf.core.records import TaskRecord
from dtf.core.state import State
from dtf.results import queries
from dtf.results.alerts import NewPoints, OnlineRegressions
from dtf.results.rows import (
    AttemptRows,
    Row,
    attempt_rows,
    merged,
    task_row,
    worker_snapshot_row,
)
from dtf.results.schema import TABLES
from dtf.results.store import ArrowBatch, ResultsStore

log = logging.getLogger(__name__)

BACKFILL_CHUNK = 5_000


@dataclass
class PendingRows:
    """Rows waiting to be written, keyed so a repeat replaces rather than adds."""

    tasks: dict[str, Row] = field(default_factory=dict)
    attempts: dict[tuple[str, int], AttemptRows] = field(default_factory=dict)
    worker_snapshots: dict[tuple[str, int], Row] = field(default_factory=dict)

    @property
    def row_count(self) -> int:
        children = sum(len(a.metric_samples) + len(a.test_cases) for a in self.attempts.values())
        return len(self.tasks) + len(self.attempts) + children + len(self.worker_snapshots)

    @property
    def is_empty(self) -> bool:
        return not (self.tasks or self.attempts or self.worker_snapshots)

    def new_points(self) -> list[NewPoints]:
        """Per series the pending samples belong to: how many each attempt adds, oldest first."""
        by_series: dict[tuple[Any, ...], list[tuple[float, int, int, int]]] = {}
        for rows in self.attempts.values():
            counts: dict[tuple[Any, ...], int] = {}
            for sample in rows.metric_samples:
                key = tuple(sample[name] for name in queries.SERIES_KEY)
                counts[key] = counts.get(key, 0) + 1
            row = rows.attempt
            order = (row["finished_at"] or 0.0, row["task_seq"] or 0, row["attempt"])
            for key, count in counts.items():
                by_series.setdefault(key, []).append((*order, count))
        return [
            NewPoints(
                dict(zip(queries.SERIES_KEY, key, strict=True)),
                [entry[-1] for entry in sorted(entries)],
            )
            for key, entries in sorted(by_series.items(), key=str)
        ]

    def update(self, newer: PendingRows) -> None:
        self.tasks.update(newer.tasks)
        self.attempts.update(newer.attempts)
        self.worker_snapshots.update(newer.worker_snapshots)

    def to_arrow(self) -> ArrowBatch:
        attempts = list(self.attempts.values())
        rows = {
            "tasks": list(self.tasks.values()),
            "attempts": [a.attempt for a in attempts],
            "metric_samples": [s for a in attempts for s in a.metric_samples],
            "test_cases": [t for a in attempts for t in a.test_cases],
            "worker_snapshots": list(self.worker_snapshots.values()),
        }
        return ArrowBatch(
            {
                name: pa.Table.from_pylist(table_rows, schema=TABLES[name].arrow_schema)
                for name, table_rows in rows.items()
                if table_rows
            }
        )


class ResultsIngester:
    """``bus.subscribe(ingester.on_events)``; ``start()`` before serving, ``stop()`` after."""

    def __init__(
        self,
        store: ResultsStore,
        state: Callable[[], State],
        *,
        flush_interval_s: float = 2.0,
        max_pending_rows: int = 50_000,
        clock: Callable[[], float] = time.time,
        online: OnlineRegressions | None = None,
    ) -> None:
        self.store = store
        self._state = state
        self.online = online if online is not None else OnlineRegressions(store, clock=clock)
        self.flush_interval_s = flush_interval_s
        self.max_pending_rows = max_pending_rows
        self._clock = clock
        self._pending = PendingRows()
        self._pending_count = 0
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> State:
        """The coordinator's current state (a cluster node may swap it for a snapshot's)."""
        return self._state()

    def start(self) -> None:
        """Backfill from the restored state, then write in the background."""
        written = self.backfill()
        if written:
            log.info("results backfill wrote %d rows to %s", written, self.store.path)
        self.online.load()
        self._thread = threading.Thread(target=self._run, name="dtf-results-ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write everything still pending and stop the background thread."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()

    def on_events(self, events: list[Event]) -> None:
        """Bus subscriber: turn the batch's finished work into pending rows (no I/O)."""
        rows = PendingRows()
        state = self.state
        for event in events:
            match event:
                case AttemptFinished():
                    self._collect_attempt(state, event, rows)
                case TaskStatusChanged() if event.new.is_terminal:
                    rows.tasks[event.task_id] = task_row(state.tasks[event.task_id])
                case WorkerStatusChanged() | WorkerHealthChanged():
                    self._collect_worker(state, event, rows)
        if rows.is_empty:
            return
        with self._lock:
            self._pending.update(rows)
            self._pending_count += rows.row_count
            full = self._pending_count >= self.max_pending_rows
        if full:
            self._wake.set()

    @staticmethod
    def _collect_attempt(state: State, event: AttemptFinished, rows: PendingRows) -> None:
        task = state.tasks[event.task_id]
        attempt = task.attempts[event.attempt - 1]
        rows.attempts[(task.id, attempt.number)] = attempt_rows(
            task, attempt, state.workers.get(attempt.worker_id)
        )

    def _collect_worker(
        self, state: State, event: WorkerStatusChanged | WorkerHealthChanged, rows: PendingRows
    ) -> None:
        worker = state.workers.get(event.worker_id)
        if worker is None:
            return
        kind = "status" if isinstance(event, WorkerStatusChanged) else "health"
        key = (worker.id, state.applied_seq)
        row = worker_snapshot_row(
            worker,
            journal_seq=state.applied_seq,
            recorded_at=self._clock(),
            event=kind,
            reason=event.reason,
            half_life_s=state.config.health_half_life_s,
        )
        earlier = rows.worker_snapshots.get(key)
        rows.worker_snapshots[key] = row if earlier is None else merged(earlier, row)

    def flush(self) -> dict[str, int]:
        """Write what is pending now; on failure the rows stay pending for the next try.

        One flush at a time: a caller that finds another flush writing waits for it,
        so when this returns every row pending at the call is in the file."""
        with self._flushing:
            return self._write_pending()

    def _write_pending(self) -> dict[str, int]:
        with self._lock:
            pending, self._pending = self._pending, PendingRows()
            self._pending_count = 0
        if pending.is_empty:
            return {}
        try:
            counts = self.store.insert(pending.to_arrow())
        except Exception:
            with self._lock:
                pending.update(self._pending)
                self._pending = pending
                self._pending_count = pending.row_count
            raise
        if counts.get("metric_samples"):
            try:
                counts["regression_alerts"] = len(self.online.check(pending.new_points()))
            except Exception:
                log.exception("online regression check of %s failed", self.store.path)
        return counts

    @contextlib.contextmanager
    def fresh_reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own over the file with every pending row written first
        (blocking: call it from a worker thread). A failed write is logged and the
        cursor reads what the file has (the writer thread logs the failure in full)."""
        try:
            self.flush()
        except Exception as exc:
            log.warning("reading %s without the results still pending: %s", self.store.path, exc)
        with self.store.reader() as cursor:
            yield cursor

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                log.exception("writing results to %s failed; will retry", self.store.path)

    def backfill(self) -> int:
        """Write every terminal task and finished attempt of the state the file lacks."""
        written = 0
        for chunk in _chunks(list(self.state.tasks.values()), BACKFILL_CHUNK):
            rows = self._missing_rows(chunk)
            written += sum(self.store.insert(rows.to_arrow()).values())
        return written

    def _missing_rows(self, tasks: list[TaskRecord]) -> PendingRows:
        terminal = [t for t in tasks if t.status.is_terminal]
        finished = [(t, a) for t in tasks for a in t.attempts if a.finished_at is not None]
        known_tasks = self.store.known_keys(
            "tasks", pa.table({"task_id": pa.array([t.id for t in terminal], pa.string())})
        )
        known_attempts = self.store.known_keys(
            "attempts",
            pa.table(
                {
                    "task_id": pa.array([t.id for t, _ in finished], pa.string()),
                    "attempt": pa.array([a.number for _, a in finished], pa.int32()),
                }
            ),
        )
        rows = PendingRows()
        for task in terminal:
            if (task.id,) not in known_tasks:
                rows.tasks[task.id] = task_row(task)
        for task, attempt in finished:
            if (task.id, attempt.number) not in known_attempts:
                worker = self.state.workers.get(attempt.worker_id)
                rows.attempts[(task.id, attempt.number)] = attempt_rows(task, attempt, worker)
        return rows


def _chunks(items: list[TaskRecord], size: int) -> Iterator[list[TaskRecord]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
