"""Fault injection: which attempts get a real fault, and of what kind.

How this works: for each attempt the agent asks ``plan_fault``. The answer
is drawn from a generator seeded by (seed, task id, attempt number) alone,
so the same seed gives the same faults to the same attempts on any worker,
in any order, and a run can be repeated. ``rate`` is the probability that an
attempt gets a fault; its kind is drawn from the enabled kinds the task can
take, and so is when it strikes after the task process starts.

Every kind is done for real (see ``fault_actions.py``): the task's process
group is killed or stopped, its address space is capped so it runs out of
memory, its stderr gets the exact text a device error prints, the agent's
WebSocket is cut, or the agent SIGKILLs itself. Errors that cannot happen on
this machine (a CUDA error on a CPU-only box) are emulated, and every
outcome touched says so in ``Outcome.injected_fault``.
"""

from __future__ import annotations

import enum
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtf.core.model import TaskType
from dtf.errors import InvalidRequest


class FaultKind(enum.StrEnum):
    CRASH = "crash"
    """SIGSEGV to the task's process group, as a native crash would end it."""
    HANG = "hang"
    """SIGSTOP to the group: it hangs until the task's timeout kills it."""
    OOM = "oom"
    """The task's address space is capped where it stands: its next allocation fails."""
    CUDA_ERROR = "cuda_error"
    HARDWARE_ERROR = "hardware_error"
    BROWSER_CRASH = "browser_crash"
    WEBGPU_LOST = "webgpu_lost"
    DISCONNECT = "disconnect"
    """The agent's WebSocket is cut; it reconnects and keeps its leases."""
    AGENT_CRASH = "agent_crash"
    """The agent SIGKILLs itself; its reaper kills its tasks, ``dtf up`` restarts it."""


EMULATED_KINDS = frozenset(
    {
        FaultKind.CUDA_ERROR,
        FaultKind.HARDWARE_ERROR,
        FaultKind.BROWSER_CRASH,
        FaultKind.WEBGPU_LOST,
    }
)
# A hang lasts until the task's timeout; one of an hour (the default) would
# hold a slot for that long, so such tasks get another kind.
HANG_MAX_TIMEOUT_S = 120.0
# When the fault strikes after the task process starts: early enough to land
# in tasks of a few tenths of a second.
STRIKE_AFTER_S = (0.05, 0.25)


@dataclass(frozen=True)
class FaultSettings:
    """``rate``: probability that an attempt gets a fault. ``log_path``: a JSON
    Lines file each injection is appended to (several agents may share it)."""

    rate: float = 0.1
    seed: int = 0
    kinds: tuple[FaultKind, ...] = tuple(FaultKind)
    log_path: Path | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise InvalidRequest(
                f"fault rate must be between 0 and 1, got {self.rate}", field="fault_rate"
            )
        if not self.kinds:
            raise InvalidRequest(
                f"no fault kinds enabled; choose from {', '.join(FaultKind)}", field="fault_kinds"
            )

    def worker_args(self) -> list[str]:
        """The ``dtf worker`` flags that give a worker these settings."""
        args = ["--fault-injection", "--fault-rate", repr(self.rate), "--fault-seed"]
        args += [str(self.seed), "--fault-kinds", ",".join(self.kinds)]
        return args + (["--fault-log", str(self.log_path)] if self.log_path else [])


def parse_kinds(text: str) -> tuple[FaultKind, ...]:
    """``"crash,hang"`` -> kinds; ``"all"`` or empty -> every kind."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or names == ["all"]:
        return tuple(FaultKind)
    unknown = [name for name in names if name not in FaultKind.__members__.values()]
    if unknown:
        raise InvalidRequest(
            f"unknown fault kind {', '.join(unknown)}; choose from {', '.join(FaultKind)} or all",
            field="fault_kinds",
        )
    return tuple(FaultKind(name) for name in dict.fromkeys(names))


@dataclass(frozen=True)
class PlannedFault:
    kind: FaultKind
    strike_after_s: float


def eligible_kinds(
    kinds: tuple[FaultKind, ...], task_type: TaskType, timeout_s: float
) -> list[FaultKind]:
    """The enabled kinds this task can take: a hang needs a short timeout; running
    out of memory is only certain to surface as such in a benchmark's Python."""
    eligible = []
    for kind in kinds:
        if kind is FaultKind.HANG and timeout_s > HANG_MAX_TIMEOUT_S:
            continue
        if kind is FaultKind.OOM and task_type is not TaskType.BENCHMARK:
            continue
        eligible.append(kind)
    return eligible


def plan_fault(
    settings: FaultSettings,
    *,
    task_id: str,
    attempt: int,
    task_type: TaskType,
    timeout_s: float,
) -> PlannedFault | None:
    """The fault for this attempt, or None; the same arguments always give the same answer."""
    rng = random.Random(f"dtf-fault:{settings.seed}:{task_id}:{attempt}")
    if rng.random() >= settings.rate:
        return None
    kinds = eligible_kinds(settings.kinds, task_type, timeout_s)
    if not kinds:
        return None
    return PlannedFault(rng.choice(kinds), rng.uniform(*STRIKE_AFTER_S))


@dataclass(frozen=True)
class InjectedFault:
    """One fault that was put into an attempt: a line of the fault log."""

    worker_id: str
    task_id: str
    attempt: int
    kind: FaultKind
    detail: str
    at: float

    def describe(self) -> str:
        return (
            f"injected {self.kind} into task {self.task_id} attempt {self.attempt} "
            f"on {self.worker_id}: {self.detail}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "task_id": self.task_id,
            "attempt": self.attempt,
            "kind": self.kind.value,
            "detail": self.detail,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InjectedFault:
        return cls(
            worker_id=str(data["worker_id"]),
            task_id=str(data["task_id"]),
            attempt=int(data["attempt"]),
            kind=FaultKind(data["kind"]),
            detail=str(data["detail"]),
            at=float(data["at"]),
        )


def append_to_log(path: Path, fault: InjectedFault) -> None:
    """Append one line and sync it: the next thing may be this process's SIGKILL."""
    line = (json.dumps(fault.to_json()) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(descriptor, line)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_log(path: Path) -> list[InjectedFault]:
    """Every fault in a fault log; a missing file means none, a torn last line is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    faults = []
    for line in lines:
        try:
            faults.append(InjectedFault.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            continue
    return faults
