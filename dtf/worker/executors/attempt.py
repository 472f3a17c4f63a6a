"""What every executor needs for one attempt: its files, environment and runner.

Per-attempt files live side by side in the agent's one work directory, named
by (task id, attempt, fence); none is created unless an executor needs it,
so a plain command costs no file system work beyond reading back a result
file the task may have written.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dtf.protocol import Assign
from dtf.worker.checkpoint import RESUMED_FROM_ENV, TOKEN_ENV, URL_ENV
from dtf.worker.executors.process import ProcessObserver, ProcessResult, run_process


@functools.cache
def inherited_env() -> dict[str, str]:
    """The environment this process started with, read once: copying and
    re-encoding ``os.environ`` for every task is a measurable share of the
    cost of a short task."""
    return dict(os.environ)


@dataclass(frozen=True)
class Attempt:
    assign: Assign
    workdir: Path
    cancelled: asyncio.Event | None = None
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
            **inherited_env(),
            **config_env,
            "DTF_TASK_ID": self.assign.task_id,
            "DTF_ATTEMPT": str(self.assign.attempt),
            "DTF_FENCE": str(self.assign.fence),
            "DTF_RESULT_FILE": str(self.result_file),
            **self.checkpoint_env(),
            **extra,
        }

    def checkpoint_env(self) -> dict[str, str]:
        """Where the task's ``dtf.worker.checkpoint`` calls go, with this attempt's token."""
        grant = self.assign.checkpoint
        if grant is None:
            return {}
        env = {URL_ENV: grant.url, TOKEN_ENV: grant.token}
        if grant.resumed_from is not None:
            env[RESUMED_FROM_ENV] = grant.resumed_from
        return env

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
