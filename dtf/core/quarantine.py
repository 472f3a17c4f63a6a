"""Quarantine and health checks: which workers may take new work.

How this works: a worker is quarantined when its health score (``health.py``)
drops below ``health_threshold``, or when an admin disables it. Its running
attempts go on; it gets nothing new. Every ``health_recheck_s`` the
coordinator looks again: a worker with a health-check command is asked to
run it and a pass returns it to service with a clean record; a worker
without one returns once its score has decayed back over the threshold
(keeping its record, so the next fault sends it straight back). A worker an
admin disabled stays out until an admin enables it.

A worker that registers with a health-check command runs it before its first
assignment, and again whenever its agent restarts (a new incarnation); until
it passes, the worker gets no work, and a failed check is retried on the
same schedule as quarantine.
"""

from __future__ import annotations

from dtf.core import commands as c
from dtf.core.events import RunHealthCheck, WorkerHealthChanged
from dtf.core.health import CheckState, score
from dtf.core.records import WorkerRecord, WorkerStatus
from dtf.core.workers import WorkerMixin
from dtf.errors import NotFound


class HealthMixin(WorkerMixin):
    # -- checks ------------------------------------------------------------

    def check_report_health_check(self, command: c.ReportHealthCheck) -> None:
        self.session_worker(command.worker_id, command.session)

    def check_set_worker_enabled(self, command: c.SetWorkerEnabled) -> None:
        if command.worker_id not in self.workers:
            raise NotFound(f"worker {command.worker_id!r} is not registered; see `dtf workers`")

    # -- handlers ----------------------------------------------------------

    def on_register_worker(self, command: c.RegisterWorker, now: float) -> None:
        super().on_register_worker(command, now)
        worker = self.workers[command.worker_id]
        health = worker.health
        rejoined = worker.incarnation != command.incarnation
        changed = health.check_command != command.health_check
        worker.incarnation, health.check_command = command.incarnation, command.health_check
        if command.health_check is None:
            health.check = CheckState.NONE
        elif rejoined or changed or health.check is CheckState.PENDING:
            self.request_check(worker, "joined with a health check")
        waiting = health.check is not CheckState.PENDING and health.recheck_at is None
        if health.quarantined and not health.held_by_admin and waiting:
            health.recheck_at = now

    def on_report_health_check(self, command: c.ReportHealthCheck, now: float) -> None:
        worker = self.workers[command.worker_id]
        health = worker.health
        if health.check is not CheckState.PENDING:
            return
        health.checked_at, health.check_detail = now, command.detail
        if not command.passed:
            health.check = CheckState.FAILED
            health.recheck_at = now + self.config.health_recheck_s
            self.events.append(
                WorkerHealthChanged(worker.id, True, f"health check failed: {command.detail}")
            )
            return
        health.check = CheckState.PASSED
        if health.quarantined:
            health.samples = []
            self.release(worker, f"health check passed in {command.duration_s:.1f}s")
        else:
            self.events.append(WorkerHealthChanged(worker.id, False, "health check passed"))

    def on_set_worker_enabled(self, command: c.SetWorkerEnabled, now: float) -> None:
        worker = self.workers[command.worker_id]
        health = worker.health
        why = f": {command.reason}" if command.reason else ""
        if not command.enabled:
            self.quarantine(worker, f"disabled by an admin{why}", now, by_admin=True)
            return
        health.samples = []
        if health.check in (CheckState.FAILED, CheckState.PENDING):
            health.check, health.check_detail = CheckState.PASSED, "waived by an admin"
        self.release(worker, f"enabled by an admin{why}")

    # -- timers ------------------------------------------------------------

    def fire_health_rechecks(self, now: float) -> None:
        for worker in self.workers.values():
            due = worker.health.recheck_at
            if due is not None and due <= now:
                self.recheck(worker, now)

    def recheck(self, worker: WorkerRecord, now: float) -> None:
        """Ask for the health check again, or release a worker whose score recovered.
        A worker that is away is looked at again when it registers; one that is
        only briefly disconnected, a little later."""
        health = worker.health
        health.recheck_at = None
        if health.held_by_admin or worker.status is WorkerStatus.OFFLINE:
            return
        if worker.status is WorkerStatus.SUSPECT:
            health.recheck_at = now + self.config.health_recheck_s
            return
        if health.check_command is not None:
            self.request_check(worker, "quarantine review" if health.quarantined else "retry")
            return
        level = score(health.samples, now, self.config.health_half_life_s)
        if level >= self.config.health_threshold:
            self.release(worker, f"health recovered to {level:.0f}")
        else:
            health.recheck_at = now + self.config.health_recheck_s

    def health_deadlines(self) -> list[float]:
        due = (w.health.recheck_at for w in self.workers.values())
        return [at for at in due if at is not None]

    # -- moves -------------------------------------------------------------

    def request_check(self, worker: WorkerRecord, reason: str) -> None:
        worker.health.check = CheckState.PENDING
        self.events.append(RunHealthCheck(worker.id, reason))

    def release(self, worker: WorkerRecord, reason: str) -> None:
        health = worker.health
        health.quarantined, health.quarantine_reason = False, None
        health.quarantined_at, health.held_by_admin, health.recheck_at = None, False, None
        self.events.append(WorkerHealthChanged(worker.id, False, reason))
