"""Local workers that die are started again, after a short backoff.

``dtf up`` runs a supervisor thread that looks at its workers a few times a
second. A worker found dead (killed, crashed, or crashed on purpose by
fault injection) is started again under the same id after a delay that
doubles with each death in quick succession: 0.5 s, 1 s, 2 s... at most
10 s; a worker that stayed up for a minute starts the count again. Every
death and restart is reported through ``report`` (``dtf up`` prints it).
``dtf cluster local`` runs one for its workers and one (``kind="coordinator"``) for its
coordinators.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dtf.local.processes import ManagedProcess

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2


@dataclass(frozen=True)
class RestartBackoff:
    min_s: float = 0.5
    max_s: float = 10.0
    stable_s: float = 60.0

    def delay_s(self, quick_deaths: int) -> float:
        """The wait before restarting after the ``quick_deaths``-th death in a row (1-based)."""
        return float(min(self.max_s, self.min_s * 2.0 ** max(0, quick_deaths - 1)))


@dataclass
class _Watched:
    started_at: float
    quick_deaths: int = 0
    restart_at: float | None = None


def exit_text(code: int | None) -> str:
    if code is None or code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


class WorkerSupervisor:
    """Watches ``workers()`` (id -> process) and calls ``restart(id)`` for dead ones;
    its reports call each process a ``kind`` (``coordinator node-2 exited ...``)."""

    def __init__(
        self,
        workers: Callable[[], dict[str, ManagedProcess]],
        restart: Callable[[str], ManagedProcess],
        report: Callable[[str], None],
        backoff: RestartBackoff = RestartBackoff(),
        kind: str = "worker",
    ) -> None:
        self.workers, self.restart, self.report, self.backoff = workers, restart, report, backoff
        self.kind = kind
        self.watched: dict[str, _Watched] = {}
        self.restarts = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"{kind}-supervisor", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join()

    def check(self, now: float) -> None:
        """One look at every process: schedule restarts of the dead, do those due."""
        for worker_id, process in self.workers().items():
            watched = self.watched.setdefault(worker_id, _Watched(started_at=now))
            if process.is_running:
                continue
            if watched.restart_at is None:
                self._schedule(worker_id, process, watched, now)
            elif now >= watched.restart_at:
                self._restart(worker_id, watched, now)

    def _schedule(
        self, worker_id: str, process: ManagedProcess, watched: _Watched, now: float
    ) -> None:
        is_quick = now - watched.started_at < self.backoff.stable_s
        watched.quick_deaths = watched.quick_deaths + 1 if is_quick else 1
        delay_s = self.backoff.delay_s(watched.quick_deaths)
        watched.restart_at = now + delay_s
        self.report(
            f"{self.kind} {worker_id} {exit_text(process.exit_code)}; "
            f"restarting it in {delay_s:g}s (see {process.log_path})"
        )

    def _restart(self, worker_id: str, watched: _Watched, now: float) -> None:
        try:
            process = self.restart(worker_id)
        except OSError as exc:
            watched.restart_at = now + self.backoff.max_s
            self.report(f"could not restart {self.kind} {worker_id}: {exc}; trying again later")
            return
        watched.started_at, watched.restart_at = now, None
        self.restarts += 1
        self.report(f"restarted {self.kind} {worker_id} (pid {process.pid})")

    def _run(self) -> None:
        while not self.stopping.wait(POLL_INTERVAL_S):
            try:
                self.check(time.monotonic())
            except Exception:  # the supervisor must outlive any one failed look
                logger.exception("%s supervisor check failed", self.kind)
