"""Everything a running coordinator holds, passed to routes explicitly."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from dtf import __version__
from dtf.coordinator.auth import Authenticator
from dtf.coordinator.bus import Bus
from dtf.coordinator.settings import CoordinatorSettings
from dtf.coordinator.task_waiters import TaskWaiters
from dtf.coordinator.views import open_breakers, out_of_service
from dtf.coordinator.worker_hub import WorkerHub
from dtf.core.state import State


@dataclass
class Runtime:
    settings: CoordinatorSettings
    bus: Bus
    hub: WorkerHub
    auth: Authenticator
    journal_path: str
    started_at: float = field(default_factory=time.time)
    waiters: TaskWaiters = field(default_factory=TaskWaiters)

    @property
    def state(self) -> State:
        return self.bus.state

    def status(self) -> dict[str, Any]:
        counts = self.state.status_counts()
        return {
            **counts,
            "breakers": open_breakers(self.state),
            "out_of_service": out_of_service(self.state),
            "journal_seq": self.state.applied_seq,
            "uptime_s": round(time.time() - self.started_at, 3),
            "version": __version__,
            "data_dir": str(self.settings.data_dir),
            "journal": self.journal_path,
        }
