"""Checkpoints: which saved state a task resumes from.

How this works: a task's process uploads a checkpoint blob to the
coordinator, which stores it content-addressed (SHA-256) and then journals
``RecordCheckpoint`` with the digest, never the bytes. The command counts
only under the task's *current* lease: an attempt that was fenced (its lease
expired and a newer attempt runs) gets a ``Conflict`` and cannot overwrite
the newer attempt's progress. The task keeps its latest checkpoint; the
attempt that saved it counts its saves. When a later attempt is assigned it
records the checkpoint it starts from (``resumed_from``), so the history
says which attempt resumed from which attempt's checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from dtf.core import commands as c
from dtf.core.records import AttemptRecord, CheckpointRef, TaskRecord
from dtf.core.workers import WorkerMixin
from dtf.errors import Conflict, InvalidRequest

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def resumable_digests(tasks: Iterable[TaskRecord]) -> set[str]:
    """The blobs a task could still resume from: each task's latest checkpoint. The
    ones it saved before are history (attempts name them), not needed again."""
    return {task.checkpoint.digest for task in tasks if task.checkpoint is not None}


def is_digest(text: str) -> bool:
    """Is ``text`` a lowercase hex SHA-256, as checkpoint blobs are named?"""
    return _SHA256_HEX.fullmatch(text) is not None


class CheckpointMixin(WorkerMixin):
    def check_record_checkpoint(self, command: c.RecordCheckpoint) -> None:
        if not is_digest(command.digest):
            raise InvalidRequest(
                f"checkpoint digest {command.digest!r} is not a lowercase hex SHA-256",
                field="digest",
            )
        if command.size < 0:
            raise InvalidRequest(f"checkpoint size {command.size} is negative", field="size")
        self.check_holder(command.worker_id, command.lease)
        task = self.tasks[command.lease.task_id]
        if not self.is_current_lease(task, command.worker_id, command.lease.fence):
            raise Conflict(
                f"attempt {command.lease.attempt} of task {task.id!r} no longer holds its "
                f"lease (fence {command.lease.fence}); its checkpoint is not recorded, "
                "the current attempt's progress stands"
            )

    def on_record_checkpoint(self, command: c.RecordCheckpoint, now: float) -> None:
        task = self.tasks[command.lease.task_id]
        attempt = task.attempts[command.lease.attempt - 1]
        if is_resend(attempt, command):
            return
        checkpoint = CheckpointRef(
            command.digest, command.size, command.kind, attempt.number, now, command.step
        )
        task.checkpoint = checkpoint
        attempt.last_checkpoint = checkpoint
        attempt.checkpoints_saved += 1


def is_resend(attempt: AttemptRecord, command: c.RecordCheckpoint) -> bool:
    """The same save sent again (a retried upload) changes nothing."""
    last = attempt.last_checkpoint
    return last is not None and (last.digest, last.step) == (command.digest, command.step)
