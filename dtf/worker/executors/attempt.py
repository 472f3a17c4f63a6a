"""What every executor needs for one attempt: its files, environment and runner.

Per-attempt files live side by side in the agent's one work directory, named
by (task id, attempt, fence); none is created unless an executor needs it,
so a plain command costs no file system work beyond reading back a result
file the task may have written.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dtf.protocol import Assign
from dtf.worker.executors.process import ProcessObserver, ProcessResult, run_process


@dataclass(frozen=True)
class Attempt:
    assign: Assign
    workdir: Path
    cancelled: asyncio.Event
    observer: ProcessObserver | None = None

    @property
    def timeout_s(self) -> float:
        return self.assign.spec.timeout_seconds

    def path(self, suffix: str) -> Path:
        """A per-attempt path in the work directory (not created)."""
        assign = self.assign
        return self.workdir / f"{assign.task_id}.{assign.attempt}.{assign.fence}.{suffix}"

    @property
    def result_file(self) -> Path:
        return self.path("result.json")

    def env(self, config_env: Mapping[str, str], **extra: str) -> dict[str, str]:
        """The agent's environment, then the task's, then dtf's own variables."""
        return {
            **os.environ,
            **config_env,
            "DTF_TASK_ID": self.assign.task_id,
            "DTF_ATTEMPT": str(self.assign.attempt),
            "DTF_RESULT_FILE": str(self.result_file),
            **extra,
        }

    async def run(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | Path | None
    ) -> ProcessResult:
        return await run_process(
            argv,
            env=env,
            cwd=cwd,
            timeout_s=self.timeout_s,
            cancelled=self.cancelled,
            observer=self.observer,
        )
