"""Histories of what clients, workers and coordinators saw in a run, and a pure checker.

A ``History`` holds every client-visible operation of a run:

- ``Submitted``: a submit the client saw acknowledged (task id, when);
- ``AuditRecord``: a task process a worker started, or stopped (exited, or killed when
  the worker dropped the attempt), from ``dtf worker --audit-log``; the worker, task,
  attempt and fence name the assignment it ran under;
- ``TaskSeen``: each task as each coordinator node shows it at the end: its status and
  its attempts (worker, fence, and the outcome accepted: succeeded, failed, lost, ...).

Times are ``time.monotonic()`` values, one clock for every process on one machine
(audit records and attempts also carry wall times).
``check`` returns what breaks the three rules (nothing: the history is sound):

- no acknowledged task lost: every node shows it, terminal; nodes that show a task
  terminal agree on its status and attempts;
- never two live runs of one task: its process intervals do not overlap (a process with
  no recorded end counts as running until ``History.ended_at``);
- no attempt recorded twice: a node numbers a task's attempts once each, one process
  runs an attempt, under the worker and fence the coordinator recorded for it, and an
  attempt accepted as succeeded was run by a process that exited (a killed one reports
  nothing); no process of an attempt starts after the coordinator ended that attempt
  (its ``finished_at`` and the audit record's ``time`` are both ``time.time()``), unless
  it was cancelled (an assignment and its cancellation may cross on the wire).

It assumes every worker of the run kept an audit log.

Recording (I/O, for integration tests): a ``Submitter`` thread submits tasks with ids
of its own and notes each acknowledged one in a ``Recorder``; at the end
``settle`` waits until every node shows them finished, and
``Recorder.history`` reads the workers' audit logs and every node's tasks.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec

from dtf.client import Client
from dtf.errors import DtfError
from dtf.worker.audit import AuditEvent, AuditRecord, read_audit_log

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "failed", "cancelled"})


class Submitted(msgspec.Struct, frozen=True):
    task_id: str
    monotonic: float


class AttemptSeen(msgspec.Struct, frozen=True):
    number: int
    worker_id: str
    fence: int
    status: str
    finished_at: float | None = None  # wall time the coordinator ended the attempt


class TaskSeen(msgspec.Struct, frozen=True):
    node: str
    task_id: str
    status: str
    attempts: tuple[AttemptSeen, ...] = ()

    @classmethod
    def from_view(cls, node: str, view: Mapping[str, Any]) -> TaskSeen:
        """From a task as ``GET /api/tasks`` shows it."""
        attempts = tuple(
            AttemptSeen(a["number"], a["worker_id"], a["fence"], a["status"], a.get("finished_at"))
            for a in view.get("attempts", [])
        )
        return cls(node, view["id"], view["status"], attempts)


class History(msgspec.Struct):
    nodes: list[str]
    submitted: list[Submitted]
    processes: list[AuditRecord]
    tasks: list[TaskSeen]
    ended_at: float


class Rule(enum.StrEnum):
    LOST = "lost"
    UNFINISHED = "unfinished"
    DIVERGED = "diverged"
    OVERLAP = "overlap"
    UNPAIRED = "unpaired"
    DUPLICATE_ATTEMPT = "duplicate_attempt"
    MISATTRIBUTED = "misattributed"
    UNRUN_SUCCESS = "unrun_success"
    STALE_RUN = "stale_run"


class Violation(msgspec.Struct, frozen=True):
    rule: Rule
    task_id: str
    detail: str


@dataclass(frozen=True)
class Run:
    """One task process, from its start to its end (``None``: no end recorded)."""

    started: AuditRecord
    ended: AuditRecord | None

    @property
    def stopped_at(self) -> float | None:
        return None if self.ended is None else self.ended.monotonic

    def describe(self) -> str:
        s = self.started
        end = "no end" if self.ended is None else f"{self.ended.event} {self.ended.monotonic:.3f}"
        return f"attempt {s.attempt} on {s.worker_id} pid {s.pid} [{s.monotonic:.3f}, {end}]"


def check(history: History) -> list[Violation]:
    """Every violation of the three rules in ``history``, by rule and task."""
    runs, unpaired = pair_runs(history.processes)
    by_task: dict[str, list[TaskSeen]] = defaultdict(list)
    for seen in history.tasks:
        by_task[seen.task_id].append(seen)
    return [
        *unpaired,
        *check_acknowledged(history, by_task),
        *check_overlaps(runs, history.ended_at),
        *check_attempts(runs, by_task),
    ]


def pair_runs(records: Iterable[AuditRecord]) -> tuple[list[Run], list[Violation]]:
    """Each start with the end that followed it for the same process and attempt."""
    open_runs: dict[tuple[str, int, str, int, int], AuditRecord] = {}
    runs: list[Run] = []
    unpaired: list[Violation] = []
    for record in records:
        key = (record.worker_id, record.pid, record.task_id, record.attempt, record.fence)
        if record.event is AuditEvent.STARTED:
            if key in open_runs:
                runs.append(Run(open_runs[key], None))
            open_runs[key] = record
        elif key in open_runs:
            runs.append(Run(open_runs.pop(key), record))
        else:
            detail = f"{record.event} of pid {record.pid} on {record.worker_id} with no start"
            unpaired.append(Violation(Rule.UNPAIRED, record.task_id, detail))
    runs.extend(Run(started, None) for started in open_runs.values())
    return runs, unpaired


def check_acknowledged(history: History, by_task: Mapping[str, list[TaskSeen]]) -> list[Violation]:
    violations = []
    for task_id in dict.fromkeys(s.task_id for s in history.submitted):
        seen = by_task.get(task_id, [])
        missing = sorted(set(history.nodes) - {s.node for s in seen})
        if missing:
            detail = f"acknowledged but not on {', '.join(missing)}"
            violations.append(Violation(Rule.LOST, task_id, detail))
        unfinished = [f"{s.status} on {s.node}" for s in seen if s.status not in TERMINAL]
        if unfinished:
            violations.append(Violation(Rule.UNFINISHED, task_id, ", ".join(unfinished)))
    for task_id, seen in by_task.items():
        finished = [s for s in seen if s.status in TERMINAL]  # others may only lag
        if len({(s.status, s.attempts) for s in finished}) > 1:
            detail = "; ".join(
                f"{s.node}: {s.status}, {len(s.attempts)} attempts" for s in finished
            )
            violations.append(Violation(Rule.DIVERGED, task_id, detail))
    return violations


def check_overlaps(runs: Iterable[Run], ended_at: float) -> list[Violation]:
    violations = []
    by_task: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_task[run.started.task_id].append(run)
    for task_id, task_runs in by_task.items():
        ordered = sorted(task_runs, key=lambda run: run.started.monotonic)
        latest = ordered[0]
        for run in ordered[1:]:
            if _end(latest, ended_at) > run.started.monotonic:
                detail = f"{latest.describe()} overlaps {run.describe()}"
                violations.append(Violation(Rule.OVERLAP, task_id, detail))
            if _end(run, ended_at) > _end(latest, ended_at):
                latest = run
    return violations


def _end(run: Run, ended_at: float) -> float:
    stopped_at = run.stopped_at
    return ended_at if stopped_at is None else stopped_at


def check_attempts(runs: list[Run], by_task: Mapping[str, list[TaskSeen]]) -> list[Violation]:
    violations = [*_numbered_twice(by_task), *_run_twice(runs)]
    for run in runs:
        violations += _misattributed(run, by_task.get(run.started.task_id, []))
    return [*violations, *_unrun_successes(runs, by_task)]


def _misattributed(run: Run, seen: list[TaskSeen]) -> list[Violation]:
    """A run under another worker or fence than a node recorded (one violation per
    node), or started after the attempt had ended (one, from the first node showing it)."""
    s, violations, is_stale = run.started, [], False
    for view in seen:
        recorded = {a.number: a for a in view.attempts}.get(s.attempt)
        if recorded is None or (recorded.worker_id, recorded.fence) != (s.worker_id, s.fence):
            what = "none" if recorded is None else f"{recorded.worker_id} fence {recorded.fence}"
            detail = f"{run.describe()} fence {s.fence}; {view.node} recorded {what}"
            violations.append(Violation(Rule.MISATTRIBUTED, s.task_id, detail))
        elif (
            not is_stale
            and recorded.status != "cancelled"
            and s.time > (recorded.finished_at or s.time)
        ):
            is_stale = True
            late_s = s.time - (recorded.finished_at or s.time)
            detail = (
                f"{run.describe()} started {late_s:.3f}s after {view.node} "
                f"ended the attempt ({recorded.status})"
            )
            violations.append(Violation(Rule.STALE_RUN, s.task_id, detail))
    return violations


def _numbered_twice(by_task: Mapping[str, list[TaskSeen]]) -> list[Violation]:
    violations = []
    for task_id, seen in by_task.items():
        for view in seen:
            numbers = [a.number for a in view.attempts]
            twice = sorted({n for n in numbers if numbers.count(n) > 1})
            if twice:
                detail = f"{view.node} records attempt {', '.join(map(str, twice))} twice"
                violations.append(Violation(Rule.DUPLICATE_ATTEMPT, task_id, detail))
    return violations


def _run_twice(runs: list[Run]) -> list[Violation]:
    violations = []
    by_attempt = sorted(runs, key=lambda run: (run.started.task_id, run.started.attempt))
    for (task_id, _), group in itertools.groupby(
        by_attempt, key=lambda run: (run.started.task_id, run.started.attempt)
    ):
        attempt_runs = list(group)
        if len(attempt_runs) > 1:
            detail = " and ".join(run.describe() for run in attempt_runs)
            violations.append(Violation(Rule.DUPLICATE_ATTEMPT, task_id, f"run twice: {detail}"))
    return violations


def _unrun_successes(runs: list[Run], by_task: Mapping[str, list[TaskSeen]]) -> list[Violation]:
    exited = {
        (s.task_id, s.attempt, s.worker_id, s.fence)
        for s, ended in ((run.started, run.ended) for run in runs)
        if ended is not None and ended.event is AuditEvent.EXITED
    }
    violations = []
    for task_id, seen in by_task.items():
        for view in seen:
            for a in view.attempts:
                if (
                    a.status == "succeeded"
                    and (task_id, a.number, a.worker_id, a.fence) not in exited
                ):
                    detail = (
                        f"{view.node} accepted attempt {a.number} on {a.worker_id} fence {a.fence} "
                        "as succeeded, but no process of it exited"
                    )
                    violations.append(Violation(Rule.UNRUN_SUCCESS, task_id, detail))
    return violations


# -- recording ---------------------------------------------------------------


class Recorder:
    """What clients saw acknowledged during a run; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._submitted: list[Submitted] = []

    def acknowledged(self, task_id: str) -> None:
        with self._lock:
            self._submitted.append(Submitted(task_id, time.monotonic()))

    @property
    def acknowledged_ids(self) -> list[str]:
        with self._lock:
            return [s.task_id for s in self._submitted]

    def history(self, nodes: Mapping[str, str], admin_key: str, audit_logs: list[Path]) -> History:
        """The run's history now: ``nodes`` maps node ids to URLs, whose tasks are read."""
        ended_at = time.monotonic()
        processes = [record for path in audit_logs for record in read_audit_log(path)]
        tasks = [seen for node, url in nodes.items() for seen in node_tasks(node, url, admin_key)]
        with self._lock:
            submitted = list(self._submitted)
        return History(list(nodes), submitted, processes, tasks, ended_at)


def node_tasks(node: str, url: str, admin_key: str) -> list[TaskSeen]:
    """Every task coordinator ``url`` shows, as ``TaskSeen`` of ``node``."""
    with Client(url, admin_key) as client:
        page = client.list_page(limit=100_000)
    return [TaskSeen.from_view(node, view) for view in page["tasks"]]


def settle(
    nodes: Mapping[str, str], admin_key: str, task_ids: list[str], timeout_s: float
) -> str | None:
    """Wait until every node shows every task of ``task_ids`` finished: None then, or
    after ``timeout_s`` a node and task still unfinished (or a node not answering)."""
    deadline = time.monotonic() + timeout_s
    while (unfinished := _first_unfinished(nodes, admin_key, task_ids)) is not None:
        if time.monotonic() > deadline:
            return f"after {timeout_s:g}s {unfinished}"
        time.sleep(0.2)
    return None


def _first_unfinished(nodes: Mapping[str, str], admin_key: str, task_ids: list[str]) -> str | None:
    for node, url in nodes.items():
        try:
            statuses = {seen.task_id: seen.status for seen in node_tasks(node, url, admin_key)}
        except DtfError as exc:
            return f"{node} does not answer: {exc}"
        for task_id in task_ids:
            if statuses.get(task_id) not in TERMINAL:
                return f"{node} shows {task_id} {statuses.get(task_id, 'missing')}"
    return None


class Submitter(threading.Thread):
    """Submits ``spec(task_id)`` for ids ``<prefix>-00000``, ``<prefix>-00001``, ... every
    ``interval_s`` until stopped. A submit that fails with a 5xx or no answer is repeated
    with the same id (submits are idempotent) until acknowledged; any other error ends
    the thread and is kept in ``error``."""

    def __init__(
        self,
        client: Client,
        recorder: Recorder,
        spec: Callable[[str], dict[str, Any]],
        *,
        prefix: str,
        interval_s: float,
        retry_s: float = 0.2,
    ) -> None:
        super().__init__(name=f"submitter-{prefix}", daemon=True)
        self.client, self.recorder, self.spec = client, recorder, spec
        self.prefix, self.interval_s, self.retry_s = prefix, interval_s, retry_s
        self.stopping = threading.Event()
        self.retries = 0
        self.error: DtfError | None = None

    def stop(self, timeout_s: float) -> None:
        self.stopping.set()
        self.join(timeout_s)

    def run(self) -> None:
        for number in itertools.count():
            task_id = f"{self.prefix}-{number:05d}"
            if not self.submit_until_acknowledged(task_id) or self.stopping.wait(self.interval_s):
                return

    def submit_until_acknowledged(self, task_id: str) -> bool:
        while not self.stopping.is_set():
            try:
                self.client.submit(self.spec(task_id))
            except (DtfError, httpx.HTTPError) as exc:
                if isinstance(exc, DtfError) and exc.status_code < 500:
                    self.error = exc
                    return False
                logger.info("submit of %s not acknowledged (%s); retrying", task_id, exc)
                self.retries += 1
                self.stopping.wait(self.retry_s)
            else:
                self.recorder.acknowledged(task_id)
                return True
        return False
