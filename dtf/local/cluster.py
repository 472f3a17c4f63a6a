"""A coordinator and N workers on this machine, as real child processes.

``LocalCluster`` is what ``dtf up``, ``dtf demo`` and the integration tests
share: start the coordinator, wait (bounded) for ``/health``, read the admin
key it created, create a worker key through the API, start the workers and
wait until they are online; on exit stop workers first, then the coordinator.
With ``restart_workers`` a supervisor thread starts dead workers again (see
``supervisor.py``); with ``faults`` every worker injects faults and appends
each to ``logs/faults.jsonl``. Should this process die without stopping them
(SIGKILL), an ``OrphanGuard`` (``orphan_guard.py``) kills every process it started.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from dtf.client import Client
from dtf.errors import DtfError
from dtf.local.orphan_guard import OrphanGuard
from dtf.local.processes import (
    ManagedProcess,
    find_free_port,
    is_port_free,
    start_process,
    stop_all,
)
from dtf.local.supervisor import WorkerSupervisor
from dtf.worker.faults import FaultKind, FaultSettings, InjectedFault, read_log

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class ClusterError(DtfError):
    """A local cluster process did not start or stopped unexpectedly."""

    status_code = 500


@dataclass(frozen=True)
class ClusterSettings:
    data_dir: Path
    workers: int = 2
    port: int = 0
    slots: int = 2
    lease_timeout_s: float = 10.0
    admin_key: str | None = None
    log_level: str = "info"
    startup_timeout_s: float = 30.0
    stop_timeout_s: float = 10.0
    python: str = sys.executable
    base_env: Mapping[str, str] | None = None  # None: inherit this process's environment
    coordinator_args: tuple[str, ...] = ()  # more `dtf coordinator` flags
    restart_workers: bool = False
    faults: FaultSettings | None = None


class LocalCluster:
    """``with LocalCluster(ClusterSettings(tmp, workers=3)) as cluster: cluster.client()...``"""

    def __init__(
        self, settings: ClusterSettings, report: Callable[[str], None] | None = None
    ) -> None:
        """``report`` is told of worker deaths and restarts (default: the log)."""
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.port = settings.port or find_free_port(LOOPBACK)
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.coordinator: ManagedProcess | None = None
        self.guard: OrphanGuard | None = None
        self.workers: dict[str, ManagedProcess] = {}
        self.admin_key = settings.admin_key or ""
        self.worker_key = ""
        self.lock = threading.Lock()
        self.supervisor = (
            WorkerSupervisor(self.worker_processes, self.restart_worker, report or logger.warning)
            if settings.restart_workers
            else None
        )

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def admin_key_path(self) -> Path | None:
        return None if self.settings.admin_key else self.data_dir / "admin.key"

    @property
    def worker_key_path(self) -> Path:
        return self.data_dir / "worker.key"

    @property
    def fault_log_path(self) -> Path | None:
        faults = self.settings.faults
        if faults is None:
            return None
        return faults.log_path or self.logs_dir / "faults.jsonl"

    def injected_faults(self) -> list[InjectedFault]:
        """Every fault the workers injected so far, from the fault log."""
        return read_log(self.fault_log_path) if self.fault_log_path else []

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def client(self, api_key: str | None = None, timeout_s: float = 10.0) -> Client:
        return Client(self.url, api_key or self.admin_key, timeout_s=timeout_s)

    def start(self) -> None:
        """Start everything; should any of it fail, stop what did start (and the guard)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.guard = OrphanGuard(self.settings.python)
        try:
            self._start_children()
        except BaseException:
            self.stop()
            raise

    def _start_children(self) -> None:
        self.start_coordinator()
        self.worker_key = self.create_worker_key()
        for number in range(1, self.settings.workers + 1):
            self.start_worker(f"local-{number}")
        self.wait_for_workers(list(self.workers))
        if self.supervisor is not None:
            self.supervisor.start()

    def start_coordinator(self) -> None:
        if not is_port_free(LOOPBACK, self.port):
            raise ClusterError(
                f"port {self.port} on {LOOPBACK} is in use (another coordinator?); "
                "pick another with --port"
            )
        argv = [
            *self._dtf_argv("coordinator"),
            *("--host", LOOPBACK, "--port", str(self.port)),
            *("--data-dir", str(self.data_dir)),
            *("--lease-timeout", str(self.settings.lease_timeout_s)),
            *("--log-level", self.settings.log_level),
            *self.settings.coordinator_args,
        ]
        env = self._child_env(DTF_ADMIN_KEY=self.settings.admin_key)
        log_path = self.logs_dir / "coordinator.log"
        self.coordinator = start_process("coordinator", argv, log_path, env)
        self._wait_until(self._is_healthy, "the coordinator to answer /health", self.coordinator)
        if self.admin_key_path is not None:
            self.admin_key = self.admin_key_path.read_text(encoding="utf-8").strip()

    def create_worker_key(self) -> str:
        with self.client() as client:
            key = str(client.create_key("worker", "dtf up local workers")["key"])
        descriptor = os.open(self.worker_key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
        return key

    def start_worker(self, worker_id: str) -> ManagedProcess:
        work_dir = self.data_dir / "workers" / worker_id
        argv = [
            *self._dtf_argv("worker"),
            *("--coordinator", self.url, "--worker-id", worker_id),
            *("--slots", str(self.settings.slots), "--work-dir", str(work_dir)),
        ]
        if self.settings.faults is not None:
            faults = dataclasses.replace(self.settings.faults, log_path=self.fault_log_path)
            argv += faults.worker_args()
        env = self._child_env(DTF_API_KEY=self.worker_key)
        log_path = self.logs_dir / f"worker-{worker_id}.log"
        process = start_process(f"worker {worker_id}", argv, log_path, env)
        with self.lock:
            self.workers[worker_id] = process
        return process

    def restart_worker(self, worker_id: str) -> ManagedProcess:
        """Start a worker that died again, under the same id and work directory."""
        return self.start_worker(worker_id)

    def worker_processes(self) -> dict[str, ManagedProcess]:
        with self.lock:
            return dict(self.workers)

    def wait_for_workers(self, worker_ids: list[str]) -> None:
        with self.client() as client:

            def all_online() -> bool:
                online = {
                    w["id"] for w in client.workers() if w.get("status", "online") == "online"
                }
                return online.issuperset(worker_ids)

            self._wait_until(all_online, f"workers {', '.join(worker_ids)} to come online")

    def kill_worker(self, worker_id: str) -> int:
        """SIGKILL a worker and everything it runs; returns its pid."""
        process = self.workers[worker_id]
        process.kill_tree()
        logger.info("killed worker %s (pid %d)", worker_id, process.pid)
        return process.pid

    def stop(self) -> None:
        """Stop workers, then the coordinator: SIGTERM, bounded wait, SIGKILL."""
        if self.supervisor is not None:
            self.supervisor.stop()
        stop_all(list(self.worker_processes().values()), self.settings.stop_timeout_s)
        if self.coordinator is not None:
            self.coordinator.stop(self.settings.stop_timeout_s)
        if self.guard is not None:
            self.guard.close()

    def usage_lines(self) -> list[str]:
        """How to reach this cluster from another terminal."""
        key = f"$(cat {self.admin_key_path})" if self.admin_key_path else "<your DTF_ADMIN_KEY>"
        return [
            f"coordinator  {self.url}",
            f"workers      {', '.join(self.running_workers()) or 'none'}",
            f"admin key    {self.admin_key_path or 'from DTF_ADMIN_KEY'}",
            f"worker key   {self.worker_key_path}",
            f"logs         {self.logs_dir}",
            *self.fault_lines(),
            "",
            "In another terminal:",
            f"  export DTF_COORDINATOR={self.url}",
            f"  export DTF_API_KEY={key}",
            '  dtf submit --command "echo hello" --wait',
            "  dtf tasks; dtf workers; dtf status",
            f"  DTF_API_KEY=$(cat {self.worker_key_path}) dtf worker --coordinator {self.url}"
            "   # one more worker",
        ]

    def fault_lines(self) -> list[str]:
        faults = self.settings.faults
        if faults is None:
            return []
        kinds = "all" if set(faults.kinds) == set(FaultKind) else ",".join(faults.kinds)
        return [
            f"faults       rate {faults.rate:g}, seed {faults.seed}, kinds {kinds}; "
            f"each one logged to {self.fault_log_path}"
        ]

    def running_workers(self) -> list[str]:
        workers = self.worker_processes().items()
        return [worker_id for worker_id, process in workers if process.is_running]

    def dead_processes(self) -> list[ManagedProcess]:
        processes = [self.coordinator, *self.worker_processes().values()]
        return [p for p in processes if p is not None and not p.is_running]

    def _dtf_argv(self, command: str) -> list[str]:
        return [self.settings.python, "-m", "dtf.cli", command]

    def _child_env(self, **extra: str | None) -> dict[str, str]:
        base = os.environ if self.settings.base_env is None else self.settings.base_env
        env = dict(base)
        for name in ("DTF_ADMIN_KEY", "DTF_API_KEY", "DTF_COORDINATOR"):
            env.pop(name, None)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.guard.environment() if self.guard else {})
        env.update({name: value for name, value in extra.items() if value})
        return env

    def _is_healthy(self) -> bool:
        with Client(self.url, timeout_s=2.0) as client:
            try:
                return client.health()
            except DtfError:
                return False

    def _wait_until(
        self, condition: Callable[[], bool], what: str, process: ManagedProcess | None = None
    ) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while not condition():
            dead = [process] if process and not process.is_running else self.dead_processes()
            if dead:
                raise self._died(dead[0], what)
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"gave up after {self.settings.startup_timeout_s:g}s waiting for {what}; "
                    f"see the logs in {self.logs_dir}"
                )
            time.sleep(0.1)

    def _died(self, process: ManagedProcess, what: str) -> ClusterError:
        return ClusterError(
            f"{process.name} exited with code {process.exit_code} while waiting for {what}; "
            f"last lines of {process.log_path}:\n{process.log_tail()}"
        )
