"""Deleting the checkpoint blobs no task resumes from any more.

A task keeps only its latest checkpoint (``dtf.core.checkpoints``); every save
before it stays on disk until a sweep, every ``interval_s``, deletes the blobs
no task names as its latest, once they are ``grace_s`` old (a save is stored
before it is journaled, and a re-save of the same bytes renews the file's
time). A task's latest checkpoint is kept for as long as the task is: it is
what ``GET /api/tasks/{id}/checkpoints/latest`` serves after the task ends.

Only a standalone coordinator sweeps. Its journal applies a save within the
request that stored it, so its state knows every blob a save still needs. A
cluster node's state can lag the log (or stop applying while etcd is out) for
longer than any grace, and would delete blobs that entries not yet applied
there name, including the copy a peer relied on; cluster nodes keep every
blob until the sweep can tell how far behind a node is.
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
    """Sweep ``store`` every ``interval_s`` until cancelled; a sweep under way when
    it is cancelled finishes first, so nothing deletes files after shutdown."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            swept = await _sweep_once(store, tasks, grace_s)
        except Exception:
            log.exception("checkpoint sweep of %s failed; trying again later", store.root)
            continue
        if swept.removed:
            log.info("checkpoint sweep: %s", describe(swept))


async def _sweep_once(
    store: CheckpointStore, tasks: Callable[[], Iterable[TaskRecord]], grace_s: float
) -> Swept:
    keep = resumable_digests(tasks())
    sweep = asyncio.ensure_future(asyncio.to_thread(store.sweep, keep, time.time() - grace_s))
    try:
        return await asyncio.shield(sweep)
    except asyncio.CancelledError:
        await asyncio.wait([sweep])
        raise


def describe(swept: Swept) -> str:
    return (
        f"deleted {swept.removed} superseded blobs ({swept.freed_bytes:,} bytes), kept {swept.kept}"
    )
