"""Deleting the checkpoint blobs no task resumes from any more.

A task keeps only its latest checkpoint (``dtf.core.checkpoints``); every save
before it stays on disk until a sweep, every ``interval_s``, deletes the blobs
no task names as its latest, once they are ``grace_s`` old (a save is stored
before it is journaled, and a re-save of the same bytes renews the file's
time). Each coordinator of a cluster sweeps its own store by its own applied
state: one behind the others keeps a blob a little longer, never less. A
task's latest checkpoint is kept for as long as the task is: it is what
``GET /api/tasks/{id}/checkpoints/latest`` serves after the task ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from dtf.coordinator.checkpoint_store import CheckpointStore, Swept
from dtf.core.checkpoints import resumable_digests
from dtf.core.records import TaskRecord

log = logging.getLogger(__name__)


async def sweep_checkpoints(
    store: CheckpointStore,
    tasks: Callable[[], Iterable[TaskRecord]],
    *,
    interval_s: float,
    grace_s: float,
) -> None:
    """Sweep ``store`` every ``interval_s`` until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        keep = resumable_digests(tasks())
        try:
            swept = await asyncio.to_thread(store.sweep, keep, time.time() - grace_s)
        except OSError as exc:
            log.warning("checkpoint sweep of %s failed (trying again later): %s", store.root, exc)
            continue
        if swept.removed:
            log.info("checkpoint sweep: %s", describe(swept))


def describe(swept: Swept) -> str:
    return (
        f"deleted {swept.removed} superseded blobs ({swept.freed_bytes:,} bytes), kept {swept.kept}"
    )
