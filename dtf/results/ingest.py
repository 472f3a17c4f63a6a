"""The coordinator's results ingester: from applied events to the results file.

How this works: the ingester subscribes to the command bus. For each applied
batch of events it reads the state *at that moment* (on the event loop, so
nothing changes under it) and turns finished attempts, tasks that became
terminal and worker status or health changes into rows, keyed in a pending
buffer. A background thread writes the buffer to the store as one Arrow
batch every ``flush_interval_s`` or as soon as ``max_pending_rows`` rows
wait, so the bus never waits for DuckDB.

A journal replay at start-up publishes no events, so ``backfill`` compares
the restored state with the file and writes every terminal task and
finished attempt the file lacks (a crash between the journal and the last
flush loses nothing). The store drops attempts it already has, so the
overlap of backfill and the live stream never duplicates a row.

After each written batch with metric samples, ``OnlineRegressions`` checks
the series that batch touched (``dtf.analysis.online``: Benjamini-Hochberg
over those series), folds a repeated detection of a step into the open
alert of its series (``merge_detections``) and writes new and updated
alerts to ``regression_alerts``, logging new ones at WARNING. It runs on the
writer thread, after the write, so the bus never waits for it. Backfilled
rows are not checked: ``dtf results regressions`` analyses whole series.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pyarrow as pa

from dtf.analysis.online import (
    DEFAULT_SETTINGS,
    Detection,
    OnlineSettings,
    merge_detections,
    online_checks,
)
from dtf.analysis.series import Kind, Series
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
from dtf.results.insights import analysis_series, series_labels
from dtf.results.rows import AttemptRows, Row, attempt_rows, task_row, worker_snapshot_row
from dtf.results.schema import TABLES
from dtf.results.store import ArrowBatch, ResultsStore

log = logging.getLogger(__name__)

BACKFILL_CHUNK = 5_000


@dataclass(frozen=True)
class NewPoints:
    """A series (``queries.SERIES_KEY``) and the number of points each new attempt added to
    its end, oldest first."""

    key: dict[str, Any]
    attempt_sizes: list[int]


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
        state: State,
        *,
        flush_interval_s: float = 0.5,
        max_pending_rows: int = 50_000,
        clock: Callable[[], float] = time.time,
        online: OnlineRegressions | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.online = online if online is not None else OnlineRegressions(store, clock=clock)
        self.flush_interval_s = flush_interval_s
        self.max_pending_rows = max_pending_rows
        self._clock = clock
        self._pending = PendingRows()
        self._pending_count = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

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
        for event in events:
            self._collect(event, rows)
        if rows.is_empty:
            return
        with self._lock:
            self._pending.update(rows)
            self._pending_count += rows.row_count
            full = self._pending_count >= self.max_pending_rows
        if full:
            self._wake.set()

    def _collect(self, event: Event, rows: PendingRows) -> None:
        state = self.state
        if isinstance(event, AttemptFinished):
            task = state.tasks[event.task_id]
            attempt = task.attempts[event.attempt - 1]
            rows.attempts[(task.id, attempt.number)] = attempt_rows(
                task, attempt, state.workers.get(attempt.worker_id)
            )
        elif isinstance(event, TaskStatusChanged) and event.new.is_terminal:
            rows.tasks[event.task_id] = task_row(state.tasks[event.task_id])
        elif isinstance(event, WorkerStatusChanged | WorkerHealthChanged):
            worker = state.workers.get(event.worker_id)
            if worker is not None:
                kind = "status" if isinstance(event, WorkerStatusChanged) else "health"
                rows.worker_snapshots[(worker.id, state.applied_seq)] = worker_snapshot_row(
                    worker,
                    journal_seq=state.applied_seq,
                    recorded_at=self._clock(),
                    event=kind,
                    reason=event.reason,
                    half_life_s=state.config.health_half_life_s,
                )

    def flush(self) -> dict[str, int]:
        """Write what is pending now; on failure the rows stay pending for the next try."""
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


SeriesId = tuple[str, tuple[tuple[str, str], ...]]


class OnlineRegressions:
    """The check at ingest over the series a written batch touched; keeps each series'
    open detection so that repeats of one step update one alert."""

    def __init__(
        self,
        store: ResultsStore,
        *,
        fdr: float = 0.05,
        settings: OnlineSettings = DEFAULT_SETTINGS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.fdr = fdr
        self.settings = settings
        self._clock = clock
        self._open: dict[SeriesId, Detection] = {}
        self._first_seen_at: dict[str, float] = {}

    def load(self) -> None:
        """Reopen the newest alert of each series from the file (after a restart)."""
        with self.store.reader() as cursor:
            rows = queries.latest_alerts(cursor)
        for row in reversed(rows):
            detection = detection_of(row)
            self._open[(detection.metric, detection.labels)] = detection
            self._first_seen_at[row["alert_id"]] = row["first_seen_at"]

    def check(self, batch: Sequence[NewPoints]) -> list[Row]:
        """Check each series as it stood after each of its new attempts, oldest first (one
        Benjamini-Hochberg family per round); write and return new and updated alert rows."""
        added = {_key_tuple(new.key): new.attempt_sizes for new in batch}
        window = self.settings.baseline_size + self.settings.max_recent
        with self.store.reader() as cursor:
            found = queries.series_tails(
                cursor,
                [new.key for new in batch],
                window + max(map(sum, added.values()), default=0),
            )
            machines = queries.worker_machines(cursor)
        checks = [
            (
                tail,
                analysis_series(tail, machines),
                _ends(len(tail.values), added[_key_tuple(tail.key)]),
            )
            for tail in found
        ]
        rows = []
        for round_number in range(max((len(ends) for *_, ends in checks), default=0)):
            family = [
                (tail, prefix(whole, ends[round_number]))
                for tail, whole, ends in checks
                if round_number < len(ends)
            ]
            by_id = {(s.metric, s.labels): tail for tail, s in family}
            detections = online_checks([s for _, s in family], fdr=self.fdr, settings=self.settings)
            for detection in detections:
                tail = by_id[(detection.metric, detection.labels)]
                row = self._record(shifted(detection, tail.first_index), tail.key)
                if row is not None:
                    rows.append(row)
        self._write(rows)
        return rows

    def _write(self, rows: list[Row]) -> None:
        if rows:
            schema = TABLES["regression_alerts"].arrow_schema
            self.store.insert(ArrowBatch({"regression_alerts": pa.Table.from_pylist(rows, schema)}))
        for row in rows:
            level = logging.WARNING if row["times_seen"] == 1 else logging.INFO
            log.log(level, "%s", row["summary"], extra={"event": "regression_alert"})

    def _record(self, detection: Detection, key: Mapping[str, Any]) -> Row | None:
        series_id = (detection.metric, detection.labels)
        current = self._open.get(series_id)
        if current is not None and detection.checked_index <= current.seen_until_index:
            return None  # points checked before (a replayed batch): nothing new seen
        merged = merge_detections([current, detection] if current else [detection], self.settings)
        self._open[series_id] = merged[-1]
        return self._alert_row(merged[-1], key)

    def _alert_row(self, detection: Detection, key: Mapping[str, Any]) -> Row:
        alert_id = alert_id_of(detection)
        now = self._clock()
        first_seen_at = self._first_seen_at.setdefault(alert_id, now)
        fields = msgspec.structs.asdict(detection)
        del fields["metric"], fields["labels"]
        return {
            **{name: key[name] for name in queries.SERIES_KEY},
            **fields,
            "direction": detection.direction.value,
            "kind": detection.kind.value,
            "alert_id": alert_id,
            "first_seen_at": first_seen_at,
            "recorded_at": now,
            "summary": alert_summary(detection, key),
        }


def _key_tuple(key: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(key[name] for name in queries.SERIES_KEY)


def _ends(length: int, attempt_sizes: Sequence[int]) -> list[int]:
    """Where the series ended after each new attempt (the new points are its newest)."""
    end = length - sum(attempt_sizes)
    ends = []
    for size in attempt_sizes:
        end += size
        if end > 0:
            ends.append(end)
    return ends


def prefix(series: Series, end: int) -> Series:
    """The series as it stood when its point ``end - 1`` was the newest."""
    if end == len(series):
        return series
    return dataclasses.replace(
        series,
        values=series.values[:end],
        order_keys=series.order_keys[:end],
        environments=series.environments[:end],
    )


def shifted(detection: Detection, offset: int) -> Detection:
    """Indices in a series' newest points -> positions in the whole series."""
    if offset == 0:
        return detection
    return msgspec.structs.replace(
        detection,
        change_index=detection.change_index + offset,
        checked_index=detection.checked_index + offset,
        seen_until_index=detection.seen_until_index + offset,
    )


def alert_id_of(detection: Detection) -> str:
    """Stable across repeats: the series, its environment and when the step was first seen."""
    identity = [
        detection.metric,
        detection.labels,
        detection.environment_fingerprint,
        detection.checked_index,
    ]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def detection_of(row: Mapping[str, Any]) -> Detection:
    """A stored alert row back as the detection it was written from."""
    fields = {name: row[name] for name in Detection.__struct_fields__ if name in row}
    fields["metric"] = row["name"]
    fields["labels"] = tuple(sorted(series_labels(row).items()))
    return msgspec.convert(fields, Detection)


def alert_summary(detection: Detection, key: Mapping[str, Any]) -> str:
    """One line: what moved, where, by how much, between which commits or runs."""
    unit = f" {key['unit']}" if key.get("unit") else ""
    where = ", ".join(
        f"{name}={key[name]}" for name in ("hardware_class", "batch_size", "precision") if key[name]
    )
    what = "regression" if detection.kind is Kind.REGRESSION else str(detection.kind)
    return (
        f"{what}: {detection.metric} of {key['model']} ({where}) "
        f"{detection.before_median:.4g} -> {detection.after_median:.4g}{unit} "
        f"({100 * detection.relative_change:+.1f} %) between {detection.last_good_key} and "
        f"{detection.first_bad_key}; p={detection.p_value:.2g}, q={detection.q_value:.2g}, "
        f"seen {detection.times_seen}x"
    )
