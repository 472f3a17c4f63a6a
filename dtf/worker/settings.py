"""Worker agent settings: one frozen object built at the edge (CLI flags, env)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from dtf.core.model import GpuInfo, HardwareClass
from dtf.errors import InvalidRequest
from dtf.worker.connection import Endpoints
from dtf.worker.faults import FaultSettings


@dataclass(frozen=True)
class WorkerSettings:
    """``burst``: exit once idle, after at least one task ran and its outcome was
    acknowledged, when no assignment arrived for ``burst_idle_s``.
    ``work_dir`` None means a fresh temporary directory, removed at exit.
    ``faults``: inject real faults into this worker's attempts (see ``faults.py``).
    ``audit_log``: append a line per task process start and end (see ``audit.py``)."""

    coordinator_urls: list[str]
    api_key: str
    worker_id: str = field(default_factory=socket.gethostname)
    slots: int = 1
    labels: dict[str, str] = field(default_factory=dict)
    declared_hardware: list[HardwareClass] = field(default_factory=list)
    declared_gpus: list[GpuInfo] = field(default_factory=list)
    work_dir: Path | None = None
    reconnect_min_delay_s: float = 0.5
    reconnect_max_delay_s: float = 30.0
    burst: bool = False
    burst_idle_s: float = 2.0
    faults: FaultSettings | None = None
    health_check: str | None = None
    health_check_timeout_s: float = 300.0
    audit_log: Path | None = None

    def __post_init__(self) -> None:
        if not self.coordinator_urls:
            raise InvalidRequest(
                "no coordinator URL given; pass at least one, e.g. http://127.0.0.1:8080",
                field="coordinator_urls",
            )
        for url in self.coordinator_urls:
            Endpoints.parse(url)
        if not self.api_key:
            raise InvalidRequest("the worker API key is empty; pass a worker key", field="api_key")
        if self.slots < 1:
            raise InvalidRequest(f"slots must be at least 1, got {self.slots}", field="slots")
        if not 0 < self.reconnect_min_delay_s <= self.reconnect_max_delay_s:
            raise InvalidRequest(
                f"reconnect delays must satisfy 0 < min <= max, got "
                f"{self.reconnect_min_delay_s} and {self.reconnect_max_delay_s}",
                field="reconnect_min_delay_s",
            )

    @property
    def endpoints(self) -> list[Endpoints]:
        return [Endpoints.parse(url) for url in self.coordinator_urls]
