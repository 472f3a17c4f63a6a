"""Running a worker: its capabilities (detected, then as declared), its work
directory (the configured one, else a temporary one removed at the end) and
its reaper sidecar, around the agent's event loop until it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dtf.core.model import Capabilities
from dtf.heap import settle_after_start
from dtf.worker.agent import WorkerAgent
from dtf.worker.executors.process import keep_descriptors_private
from dtf.worker.hardware import declare, detect
from dtf.worker.reaper import Reaper
from dtf.worker.settings import WorkerSettings


def run_worker(settings: WorkerSettings) -> int:
    """Run a worker agent until SIGTERM/SIGINT (or idle, in burst mode); exit status."""
    capabilities = declare(
        detect(), settings.declared_hardware, settings.declared_gpus, settings.labels
    )
    settle_after_start()
    keep_descriptors_private()
    with _work_directory(settings.work_dir) as workdir:
        return asyncio.run(_run_agent(settings, capabilities, workdir))


async def _run_agent(settings: WorkerSettings, capabilities: Capabilities, workdir: Path) -> int:
    reaper = Reaper()
    try:
        return await WorkerAgent(settings, capabilities, workdir, reaper).run()
    finally:
        reaper.close()


@contextlib.contextmanager
def _work_directory(configured: Path | None) -> Iterator[Path]:
    if configured is not None:
        configured.mkdir(parents=True, exist_ok=True)
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="dtf-worker-") as created:
        yield Path(created)
