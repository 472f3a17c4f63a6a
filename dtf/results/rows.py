"""Rows for the results file, built from the coordinator's records (pure).

How a result is located: every metric sample carries the run and commit
labels, the model, the hardware class the attempt ran on, the device model
(GPU, browser or CPU), the batch size and precision it ran with (the spec's
params with recovery's patch applied) and the remaining params as canonical
JSON (``config``), so equal dimensions mean a comparable series. A metric that
is a list of numbers is one sample per repeat (``sample_index``). A metric
that echoes a param of the same name and value (``batch_size``) is not a
measurement and is left out, as are values that are not finite numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from dtf.analysis.units import metric_unit
from dtf.core.effective import effective_requirements
from dtf.core.health import score
from dtf.core.model import HardwareClass, TaskSpec, TaskType
from dtf.core.pattern_records import attempt_hardware
from dtf.core.records import AttemptRecord, TaskRecord, WorkerRecord

Row = dict[str, Any]

# Dimensions with a column of their own; every other param goes into ``config``.
DIMENSION_PARAMS = frozenset({"model", "batch_size", "precision"})

# The config key naming what a task of each type runs, for tasks without a name.
WHAT_IT_RUNS = {
    TaskType.BENCHMARK: "entry_point",
    TaskType.TEST: "path",
    TaskType.COMMAND: "command",
}

# One encoder each, made once: ``json.dumps`` with options builds a new one per call.
_labels_json = json.JSONEncoder(sort_keys=True).encode
_params_json = json.JSONEncoder(sort_keys=True, default=str).encode
_config_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode


@dataclass  # not frozen: that takes twice as long to build, once per finished attempt
class Location:
    """Where an attempt's results come from (see the module docstring)."""

    run_id: str | None
    commit: str | None
    model: str
    hardware_class: str
    device_model: str
    batch_size: int | None
    precision: str | None
    params: dict[str, Any]

    @cached_property
    def config(self) -> str:
        """The params that are not dimensions, as canonical JSON (only samples need it)."""
        other = {k: v for k, v in self.params.items() if k not in DIMENSION_PARAMS}
        return _config_json(other) if other else "{}"


def effective_params(task: TaskRecord, attempt: AttemptRecord) -> dict[str, Any]:
    """What the attempt ran with: a benchmark's params, or the recovery patch alone."""
    patch = attempt.params_patch
    if task.spec.type is not TaskType.BENCHMARK:
        return dict(patch)
    return {**task.spec.config.get("params", {}), **patch}


def locate(task: TaskRecord, attempt: AttemptRecord, worker: WorkerRecord | None) -> Location:
    labels = task.spec.labels
    params = effective_params(task, attempt)
    hardware = attempt_hardware(task, attempt, worker)
    return Location(
        run_id=labels.get("run_id"),
        commit=labels.get("commit") or labels.get("git_commit"),
        model=str(labels.get("model") or params.get("model") or task_name(task.spec)),
        hardware_class=hardware,
        device_model=device_model(task, hardware, worker),
        batch_size=_integer(params.get("batch_size", labels.get("batch_size"))),
        precision=_text(params.get("precision", labels.get("precision"))),
        params=params,
    )


def task_name(spec: TaskSpec) -> str:
    """The task's name, else what it runs: entry point, test path or command."""
    if spec.name:
        return spec.name
    what = spec.config.get(WHAT_IT_RUNS[spec.type], spec.type.value)
    return " ".join(what) if isinstance(what, list) else str(what)


def device_model(task: TaskRecord, hardware: str, worker: WorkerRecord | None) -> str:
    """GPU model for GPU classes, browser name and version for web classes, else the CPU."""
    if worker is None:
        return ""
    caps = worker.capabilities
    if hardware in (HardwareClass.WEBGPU, HardwareClass.WEBNN) and caps.browsers:
        wanted = effective_requirements(task).browser
        named = [b for b in caps.browsers if wanted is None or b.name == wanted.name]
        browser = (named or caps.browsers)[0]
        return f"{browser.name} {browser.version}".strip()
    if hardware != HardwareClass.CPU and caps.gpus:
        return caps.gpus[0].model
    return caps.cpu_model


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def metric_values(metrics: dict[str, Any], params: dict[str, Any]) -> list[tuple[str, int, float]]:
    """``(name, sample_index, value)`` for every measured number in ``metrics``."""
    samples: list[tuple[str, int, float]] = []
    for name, value in metrics.items():
        if name in params and params[name] == value:
            continue
        values = value if isinstance(value, list) else [value]
        samples.extend(
            (name, index, float(v)) for index, v in enumerate(values) if _is_measurement(v)
        )
    return samples


def _is_measurement(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class AttemptRows:
    """One finished attempt's rows: written together or not at all."""

    attempt: Row
    metric_samples: list[Row]
    test_cases: list[Row]


def attempt_rows(
    task: TaskRecord, attempt: AttemptRecord, worker: WorkerRecord | None
) -> AttemptRows:
    where = locate(task, attempt, worker)
    outcome = attempt.outcome
    recorded_at = attempt.finished_at
    samples = [
        _sample_row(task, attempt, where, name, index, value)
        for name, index, value in metric_values(outcome.metrics if outcome else {}, where.params)
    ]
    tests = [
        {
            **_common(task, attempt, where),
            "node_id": case.node_id,
            "outcome": case.outcome.value,
            "duration_s": case.duration_s,
            "message": case.message,
            "recorded_at": recorded_at,
        }
        for case in (outcome.test_cases if outcome else [])
    ]
    return AttemptRows(_attempt_row(task, attempt, where, len(samples), len(tests)), samples, tests)


def _common(task: TaskRecord, attempt: AttemptRecord, where: Location) -> Row:
    return {
        "task_id": task.id,
        "attempt": attempt.number,
        "run_id": where.run_id,
        "commit": where.commit,
        "model": where.model,
        "hardware_class": where.hardware_class,
        "worker_id": attempt.worker_id,
    }


def _sample_row(
    task: TaskRecord, attempt: AttemptRecord, where: Location, name: str, index: int, value: float
) -> Row:
    return {
        **_common(task, attempt, where),
        "name": name,
        "sample_index": index,
        "value": value,
        "unit": metric_unit(name),
        "device_model": where.device_model,
        "batch_size": where.batch_size,
        "precision": where.precision,
        "config": where.config,
        "recorded_at": attempt.finished_at,
        "task_seq": task.seq,
    }


def _attempt_row(
    task: TaskRecord, attempt: AttemptRecord, where: Location, samples: int, tests: int
) -> Row:
    outcome = attempt.outcome
    return {
        **_common(task, attempt, where),
        "task_seq": task.seq,
        "status": attempt.status.value,
        "failure": _text(attempt.failure),
        "failure_type": _text(attempt.failure_type),
        "reason": attempt.reason,
        "recovery": _text(attempt.recovery),
        "assigned_at": attempt.assigned_at,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "duration_s": outcome.duration_s if outcome else None,
        "exit_code": outcome.exit_code if outcome else None,
        "signal": outcome.signal if outcome else None,
        "device_model": where.device_model,
        "batch_size": where.batch_size,
        "precision": where.precision,
        "params": _params_json(where.params) if where.params else "{}",
        "injected_fault": outcome.injected_fault if outcome else None,
        "metric_samples": samples,
        "test_cases": tests,
    }


def task_row(task: TaskRecord) -> Row:
    """A terminal task: its final status and how many attempts it took."""
    labels = task.spec.labels
    last = task.attempts[-1] if task.attempts else None
    params = effective_params(task, last) if last else {}
    return {
        "task_id": task.id,
        "task_seq": task.seq,
        "task_type": task.spec.type.value,
        "name": task.spec.name,
        "status": task.status.value,
        "status_reason": task.status_reason,
        "priority": task.spec.priority,
        "submitted_at": task.submitted_at,
        "finished_at": task.finished_at,
        "attempts": len(task.attempts),
        "run_id": labels.get("run_id"),
        "commit": labels.get("commit") or labels.get("git_commit"),
        "model": str(labels.get("model") or params.get("model") or task_name(task.spec)),
        "labels": _labels_json(labels) if labels else "{}",
    }


def worker_snapshot_row(
    worker: WorkerRecord,
    *,
    journal_seq: int,
    recorded_at: float,
    event: str,
    reason: str | None,
    half_life_s: float,
) -> Row:
    caps = worker.capabilities
    return {
        "worker_id": worker.id,
        "journal_seq": journal_seq,
        "recorded_at": recorded_at,
        "event": event,
        "reason": reason,
        "status": worker.status.value,
        "quarantined": worker.health.quarantined,
        "health_score": score(worker.health.samples, recorded_at, half_life_s),
        "slots": worker.slots,
        "busy_slots": len(worker.leases),
        "hardware": [h.value for h in caps.hardware],
        "cpu_model": caps.cpu_model,
        "cpu_count": caps.cpu_count,
        "memory_gb": caps.memory_gb,
        "gpu_models": [gpu.model for gpu in caps.gpus],
        "tasks_completed": worker.tasks_completed,
        "tasks_failed": worker.tasks_failed,
    }


def merged(earlier: Row, later: Row) -> Row:
    """One command that changed a worker twice (its status and its health) is one
    snapshot, keyed by its journal seq, naming both changes and both reasons."""
    events = dict.fromkeys([*str(earlier["event"]).split("+"), str(later["event"])])
    reasons = dict.fromkeys(r for r in (earlier["reason"], later["reason"]) if r)
    return {**later, "event": "+".join(events), "reason": "; ".join(reasons) or None}
