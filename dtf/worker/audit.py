"""An opt-in audit log of the task processes a worker ran: what ran on this machine when.

``dtf worker --audit-log FILE`` appends one JSON line per event: a task process
``started``; it ``exited`` by itself (or after the executor stopped it on timeout); or it
was ``killed`` because the agent dropped its attempt while it ran (self-fenced, cancelled
by the coordinator, worker stopping), in which case no outcome is reported. Each line
names the worker, task, attempt, fence and process id, says why when it can, and carries
``time.monotonic()`` (one clock for every process on this machine) and ``time.time()``.
A start is written once the process runs; an end once the agent has reaped it, so the
interval between them covers the process's life. Every line is written as it happens,
so the log survives the agent being killed; a start with no end then means the agent
died first and its reaper, not the agent, stopped the process.
"""

from __future__ import annotations

import enum
import threading
import time
from pathlib import Path

import msgspec

from dtf.core.model import LeaseRef
from dtf.errors import InvalidRequest

DROPPED = "the agent dropped the attempt"


class AuditEvent(enum.StrEnum):
    STARTED = "started"
    EXITED = "exited"
    KILLED = "killed"


class AuditRecord(msgspec.Struct, frozen=True):
    worker_id: str
    task_id: str
    attempt: int
    fence: int
    pid: int
    event: AuditEvent
    monotonic: float
    time: float
    reason: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AuditRecord)


class AuditLog:
    """Appends ``AuditRecord`` lines to ``path``. ``started`` and ``ended`` are called on
    the agent's event loop; ``note_dropped`` from any thread."""

    def __init__(self, path: Path, worker_id: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.worker_id = path, worker_id
        self._file = path.open("ab", buffering=0)
        self._lock = threading.Lock()
        self._drop_reasons: dict[LeaseRef, str] = {}

    def note_dropped(self, lease: LeaseRef, reason: str) -> None:
        """Why the agent is dropping ``lease``; its process's end is written as killed."""
        with self._lock:
            self._drop_reasons.setdefault(lease, reason)

    def started(self, lease: LeaseRef, pid: int) -> None:
        self._write(lease, pid, AuditEvent.STARTED, None)

    def ended(self, lease: LeaseRef, pid: int, *, is_dropped: bool) -> None:
        """The process was reaped; ``is_dropped``: the agent no longer holds its lease."""
        with self._lock:
            reason = self._drop_reasons.pop(lease, None)
        if reason is None and is_dropped:
            reason = DROPPED
        event = AuditEvent.EXITED if reason is None else AuditEvent.KILLED
        self._write(lease, pid, event, reason)

    def close(self) -> None:
        self._file.close()

    def _write(self, lease: LeaseRef, pid: int, event: AuditEvent, reason: str | None) -> None:
        record = AuditRecord(
            self.worker_id,
            lease.task_id,
            lease.attempt,
            lease.fence,
            pid,
            event,
            time.monotonic(),
            time.time(),
            reason,
        )
        self._file.write(_encoder.encode(record) + b"\n")


def read_audit_log(path: Path) -> list[AuditRecord]:
    """Every record in an audit log file, in the order written."""
    records = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(_decoder.decode(line))
            except msgspec.DecodeError as exc:
                raise InvalidRequest(
                    f"line {number} of audit log {path} is not an audit record ({exc}); "
                    "pass a file written by `dtf worker --audit-log`"
                ) from None
    return records
