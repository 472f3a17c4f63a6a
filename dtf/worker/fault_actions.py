"""Doing a planned fault for real, to a real task process or to the agent itself.

``FaultInjector`` is what the agent holds; for an attempt that ``plan_fault``
picked it returns an ``AttemptFaults``, which stands in as the attempt's
process observer: once the task's process group has run for the planned
time, the fault strikes it. A fault that finds the process already gone is
not injected and not recorded. Device errors this machine cannot have are
emulated by writing the exact text such an error prints into the task
process's own stderr pipe (``/proc/PID/fd/2``), marked as injected on the
line the classifier quotes, then ending the group with SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
import psutil

from dtf.core.model import LeaseRef, Outcome
from dtf.protocol import Assign
from dtf.worker.executors.process import ProcessObserver
from dtf.worker.faults import (
    EMULATED_KINDS,
    FaultKind,
    FaultSettings,
    InjectedFault,
    PlannedFault,
    append_to_log,
    plan_fault,
)

logger = logging.getLogger(__name__)

INJECTED_MARK = "[injected by dtf fault injection]"
# What each emulated error prints, as the real one does; the line the
# classifier's rule quotes carries INJECTED_MARK.
EMULATED_STDERR = {
    FaultKind.CUDA_ERROR: (
        "RuntimeError: CUDA error: an illegal memory access was encountered {mark}\n"
        "CUDA kernel errors might be asynchronously reported at some other API call, "
        "so the stacktrace below might be incorrect.\n"
        "For debugging consider passing CUDA_LAUNCH_BLOCKING=1.\n"
    ),
    FaultKind.HARDWARE_ERROR: (
        "NVRM: Xid (PCI:0000:3b:00): 79, pid={pid}, GPU has fallen off the bus. {mark}\n"
    ),
    FaultKind.BROWSER_CRASH: (
        "playwright._impl._errors.TargetClosedError: Target page, context or browser "
        "has been closed {mark}\n"
    ),
    FaultKind.WEBGPU_LOST: (
        "Error: GPUDevice was lost (reason: unknown): A valid external Instance reference "
        "no longer exists. {mark}\n"
    ),
}


class AgentHooks(Protocol):
    def drop_connection(self, reason: str) -> bool: ...


class FaultInjector:
    def __init__(self, settings: FaultSettings, worker_id: str, agent: AgentHooks) -> None:
        self.settings, self.worker_id, self.agent = settings, worker_id, agent

    def watch(self, assign: Assign, observer: ProcessObserver) -> AttemptFaults | None:
        """The observer to run ``assign`` with when it gets a fault, else None."""
        planned = plan_fault(
            self.settings,
            task_id=assign.task_id,
            attempt=assign.attempt,
            task_type=assign.spec.type,
            timeout_s=assign.spec.timeout_seconds,
        )
        return None if planned is None else AttemptFaults(self, assign.lease, planned, observer)

    def record(self, lease: LeaseRef, kind: FaultKind, detail: str) -> None:
        logger.warning(
            "fault injection: %s into task %s attempt %d: %s",
            kind,
            lease.task_id,
            lease.attempt,
            detail,
            extra={"event": "fault_injected", "task_id": lease.task_id, "fault": kind.value},
        )
        if self.settings.log_path is not None:
            fault = InjectedFault(
                self.worker_id, lease.task_id, lease.attempt, kind, detail, time.time()
            )
            append_to_log(self.settings.log_path, fault)


class AttemptFaults:
    """The attempt's process observer, passing everything on to ``inner``,
    that strikes the planned fault while the process runs."""

    def __init__(
        self,
        injector: FaultInjector,
        lease: LeaseRef,
        planned: PlannedFault,
        inner: ProcessObserver,
    ) -> None:
        self.injector, self.lease, self.planned, self.inner = injector, lease, planned, inner
        self.timer: asyncio.TimerHandle | None = None
        self.detail: str | None = None

    def process_started(self, pgid: int) -> None:
        """Arm the fault for this process; an attempt gets at most one fault."""
        self.inner.process_started(pgid)
        if self.detail is not None:
            return
        self.close()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.planned.strike_after_s, self.strike, pgid)

    def process_ended(self, pgid: int) -> None:
        self.close()
        self.inner.process_ended(pgid)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def strike(self, pgid: int) -> None:
        self.timer = None
        kind = self.planned.kind
        if kind is FaultKind.AGENT_CRASH:
            crash_agent(self.injector, self.lease)
            return
        if kind is FaultKind.DISCONNECT:
            detail = cut_connection(self.injector.agent, self.lease)
        else:
            detail = strike_process(kind, pgid)
        if detail is None:
            logger.info("fault %s for task %s found its process gone", kind, self.lease.task_id)
            return
        self.detail = detail
        self.injector.record(self.lease, kind, detail)

    def label(self, outcome: Outcome) -> Outcome:
        """The outcome marked with the fault, if it struck; a failure's error says so too."""
        if self.detail is None:
            return outcome
        kind = self.planned.kind
        error = outcome.error
        if outcome.failure is not None:
            note = f"injected fault {kind}: {self.detail}"
            error = f"{error}; {note}" if error else note
        return msgspec.structs.replace(outcome, injected_fault=kind.value, error=error)


def crash_agent(injector: FaultInjector, lease: LeaseRef) -> None:
    pid = os.getpid()
    injector.record(lease, FaultKind.AGENT_CRASH, f"worker agent (pid {pid}) SIGKILLed itself")
    os.kill(pid, signal.SIGKILL)


def cut_connection(agent: AgentHooks, lease: LeaseRef) -> str | None:
    if not agent.drop_connection(f"fault injection into task {lease.task_id}"):
        return None
    return "the agent's WebSocket to the coordinator was cut mid-task"


def strike_process(kind: FaultKind, pgid: int) -> str | None:
    """Do ``kind`` to the process group ``pgid``; what was done, or None if it was gone."""
    try:
        return _PROCESS_FAULTS[kind](pgid)
    except (ProcessLookupError, psutil.NoSuchProcess, FileNotFoundError, PermissionError):
        return None


def crash(pgid: int) -> str:
    for process in group_members(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            _, hard = resource.prlimit(process, resource.RLIMIT_CORE)
            resource.prlimit(process, resource.RLIMIT_CORE, (0, hard))
    os.killpg(pgid, signal.SIGSEGV)
    return f"SIGSEGV sent to process group {pgid} (core dumps off)"


def hang(pgid: int) -> str:
    os.killpg(pgid, signal.SIGSTOP)
    return f"SIGSTOP sent to process group {pgid}: it hangs until its timeout"


def out_of_memory(pgid: int) -> str:
    size = psutil.Process(pgid).memory_info().vms
    _, hard = resource.prlimit(pgid, resource.RLIMIT_AS)
    resource.prlimit(pgid, resource.RLIMIT_AS, (size, hard))
    return (
        f"address space of pid {pgid} capped at its size then, {size / 2**20:.0f} MiB "
        "(RLIMIT_AS): its next allocation fails"
    )


def emulated(kind: FaultKind) -> Callable[[int], str]:
    def emulate(pgid: int) -> str:
        text = EMULATED_STDERR[kind].format(pid=pgid, mark=INJECTED_MARK)
        with open(f"/proc/{pgid}/fd/2", "w", encoding="utf-8") as stderr:
            stderr.write(text)
        os.killpg(pgid, signal.SIGTERM)
        return (
            f"emulated {kind} (this machine cannot have one): its text written to "
            "the task's stderr, then SIGTERM"
        )

    return emulate


def group_members(pgid: int) -> list[int]:
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == pgid:
                members.append(process.pid)
    return members


_PROCESS_FAULTS: dict[FaultKind, Callable[[int], str]] = {
    FaultKind.CRASH: crash,
    FaultKind.HANG: hang,
    FaultKind.OOM: out_of_memory,
    **{kind: emulated(kind) for kind in EMULATED_KINDS},
}
