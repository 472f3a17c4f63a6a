"""Workers: registration, heartbeats, connection loss, liveness.

A worker is ``online`` while connected and heard from, ``suspect`` as soon as
its connection drops (no new work; its leases run on, so a short blip costs
nothing), and ``offline`` when no heartbeat arrived within the worker timeout.
A drop or a silence counts against the worker's health only when it held work
then: an agent stopped or restarted while idle disrupted nothing.
Leases are renewed only for the attempts a worker says it holds; an attempt
it no longer holds ends as lost at once instead of waiting for expiry.

In a cluster a worker is also ``suspect`` once the node it is connected
through is lost (``stranding.py``); what it loses until it registers again,
or a heartbeat journaled by that node shows it back, is lost with the coordinator.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtf.core import commands as c
from dtf.core.events import RetryScheduled, WorkerStatusChanged
from dtf.core.failures import FailureEvidence, classify
from dtf.core.health import connection_dropped, went_silent
from dtf.core.lifecycle import Lifecycle
from dtf.core.matching import satisfies
from dtf.core.model import FailureKind, LeaseRef, RequirementSet
from dtf.core.records import AttemptStatus, TaskRecord, TaskStatus, WorkerRecord, WorkerStatus
from dtf.errors import Conflict, InvalidRequest, NotFound


class WorkerMixin(Lifecycle):
    # -- checks ------------------------------------------------------------

    def check_register_worker(self, command: c.RegisterWorker) -> None:
        if command.slots < 1:
            raise InvalidRequest(f"slots must be at least 1, got {command.slots}", field="slots")

    def check_heartbeat(self, command: c.Heartbeat) -> None:
        self.session_worker(command.worker_id, command.session)

    def check_task_started(self, command: c.TaskStarted) -> None:
        self.check_holder(command.worker_id, command.lease)

    def check_report_outcome(self, command: c.ReportOutcome) -> None:
        if command.outcome.failure is FailureKind.COORDINATOR_LOST:
            raise InvalidRequest(
                f"worker {command.worker_id!r} reported failure 'coordinator_lost' for task "
                f"{command.lease.task_id!r}: only the coordinator ends an attempt so, when the "
                "node the worker was connected through is lost; report what the task met "
                "(e.g. 'executor_error' or 'crashed')",
                field="outcome.failure",
            )
        self.check_holder(command.worker_id, command.lease)

    def session_worker(self, worker_id: str, session: str) -> WorkerRecord:
        worker = self.workers.get(worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id!r} is not registered; register first")
        if worker.session != session:
            raise Conflict(
                f"session {session!r} of worker {worker_id!r} was replaced; reconnect and register"
            )
        return worker

    def check_holder(self, worker_id: str, lease: LeaseRef) -> None:
        task = self.tasks.get(lease.task_id)
        if task is None:
            raise NotFound(f"worker {worker_id!r} reported for unknown task {lease.task_id!r}")
        if not 1 <= lease.attempt <= len(task.attempts):
            raise Conflict(
                f"task {lease.task_id!r} has no attempt {lease.attempt}; "
                f"worker {worker_id!r} does not hold it"
            )
        attempt = task.attempts[lease.attempt - 1]
        if attempt.worker_id != worker_id or attempt.fence != lease.fence:
            raise Conflict(
                f"worker {worker_id!r} does not hold task {lease.task_id!r} attempt "
                f"{lease.attempt} (fence {lease.fence})"
            )

    # -- handlers ----------------------------------------------------------

    def on_register_worker(self, command: c.RegisterWorker, now: float) -> None:
        worker = self.workers.get(command.worker_id)
        if worker is None:
            worker = WorkerRecord(
                command.worker_id, command.capabilities, command.slots, now, now, command.session
            )
            self.workers[worker.id] = worker
            self.events.append(
                WorkerStatusChanged(worker.id, None, WorkerStatus.ONLINE, "registered")
            )
        else:
            worker.capabilities, worker.slots = command.capabilities, command.slots
            worker.session, worker.last_seen_at = command.session, now
            self.set_worker_status(worker, WorkerStatus.ONLINE, "reconnected")
        self.ready.forget_worker(worker.id)
        same_process = bool(command.incarnation) and command.incarnation == worker.incarnation
        seen = command.max_fence_seen if same_process else None
        self.reconcile_leases(worker, command.held, seen, now, registering=True)
        worker.node_id, worker.node_incarnation = command.node_id, command.node_incarnation
        worker.lost_node = None
        worker.status_when_stranded = None

    def on_heartbeat(self, command: c.Heartbeat, now: float) -> None:
        """A heartbeat of the registered session journaled by the very node (and
        incarnation) whose loss stranded the worker shows that node appends again: the worker is back,
        with the status it had when stranded, if its channel did not close meanwhile."""
        worker = self.workers[command.worker_id]
        worker.last_seen_at = now
        if worker.status is WorkerStatus.OFFLINE:
            self.set_worker_status(worker, WorkerStatus.SUSPECT, "heartbeat after silence")
        self.reconcile_leases(worker, command.held, command.max_fence_seen, now)
        journaled_by = (command.node_id, command.node_incarnation)
        if worker.lost_node is not None and journaled_by == (
            worker.lost_node,
            worker.node_incarnation,
        ):
            self.end_stranding(worker)

    def end_stranding(self, worker: WorkerRecord) -> None:
        node_id, was = worker.lost_node, worker.status_when_stranded
        worker.lost_node, worker.status_when_stranded = None, None
        if worker.node_id == node_id and was is not None:
            self.set_worker_status(worker, was, f"coordinator node {node_id} is back")

    def on_worker_disconnected(self, command: c.WorkerDisconnected, now: float) -> None:
        worker = self.workers.get(command.worker_id)
        if worker is None or worker.session != command.session:
            return
        worker.node_id = ""  # connected through no node until it registers again
        if worker.status is WorkerStatus.ONLINE:
            self.set_worker_status(worker, WorkerStatus.SUSPECT, "connection dropped")
            if worker.leases:
                self.note_health(worker.id, connection_dropped(now), now)

    def reconcile_leases(
        self,
        worker: WorkerRecord,
        held: list[LeaseRef],
        max_fence_seen: int | None,
        now: float,
        *,
        registering: bool = False,
    ) -> None:
        """Renew what the worker holds; end as lost what it dropped.

        A lease with a fence above ``max_fence_seen`` (the highest the worker
        process has seen) has not reached it. On a heartbeat it may still be in
        flight, so it is left alone; on a registration the connection it went out
        on has ended, so it is queued again uncharged (``requeue_undelivered``)
        while ``is_loss_forgiven``. Without ``max_fence_seen`` (a registration by
        another process, or one that does not say) every lease it lacks is dropped.
        """
        held_fences = {ref.fence for ref in held}
        dropped: list[TaskRecord] = []
        undelivered: list[TaskRecord] = []
        for task_id in list(worker.leases):
            task = self.tasks[task_id]
            assert task.lease is not None
            unseen = max_fence_seen is not None and task.lease.fence > max_fence_seen
            if task.lease.fence in held_fences:
                self.renew_lease(task, now)
            elif not unseen:
                dropped.append(task)
            elif registering:
                (undelivered if self.is_loss_forgiven(task) else dropped).append(task)
        for task in undelivered:
            self.requeue_undelivered(worker, task, now)
        if dropped:
            worker.incident_tasks = [task.id for task in dropped]
        for task in dropped:
            assert task.lease is not None
            reason = f"worker {worker.id} no longer holds attempt {task.lease.attempt}"
            self.lose_attempt(task, reason, now)
        worker.incident_tasks = []

    def lose_attempt(self, task: TaskRecord, reason: str, now: float) -> None:
        """End the current attempt as lost, remembering which tasks went down
        with it: their retries are kept apart, so that a task that crashes
        worker after worker (a poison task) is told from its bystanders.
        A worker stranded by a lost coordinator node says nothing about its
        tasks, up to ``max_coordinator_losses`` such losses per task."""
        assert task.lease is not None
        worker = self.workers.get(task.lease.worker_id)
        if worker is not None and worker.lost_node is not None:
            if self.is_loss_forgiven(task):
                self.lose_with_coordinator(task, worker.lost_node, reason, now)
                return
            reason = (
                f"{reason}; lost with coordinator node {worker.lost_node}, but the task was "
                f"lost with nodes {self.config.max_coordinator_losses} times already "
                "(max_coordinator_losses), so this one counts"
            )
        if worker is not None:
            if task.id not in worker.incident_tasks:  # an earlier incident's list is stale
                worker.incident_tasks = list(worker.leases)
            task.crash_mates = [t for t in worker.incident_tasks if t != task.id]
        self.fail_attempt(
            task, now, failure=FailureKind.WORKER_LOST, reason=reason, status=AttemptStatus.LOST
        )

    def requeue_undelivered(self, worker: WorkerRecord, task: TaskRecord, now: float) -> None:
        """End an attempt the worker process was never sent (the connection it went
        out on ended first: its coordinator node died between journaling and sending
        it, say) as lost with that connection's node, and queue the task again at
        once, uncharged (``lose_with_node``): losing it is no crash of the worker's."""
        assert task.lease is not None
        reason = (
            f"worker {worker.id} registered again without having been sent attempt "
            f"{task.lease.attempt} (fence {task.lease.fence}): the connection it went out on "
            "ended first"
        )
        self.lose_with_node(task, worker.node_id, reason, now)

    def lose_with_coordinator(
        self, task: TaskRecord, node_id: str, reason: str, now: float
    ) -> None:
        """End the attempt as lost with the worker's coordinator node and queue the
        task again at once (``lose_with_node``)."""
        reason = f"{reason}; the coordinator node it was connected through ({node_id}) was lost"
        self.lose_with_node(task, node_id, reason, now)

    def lose_with_node(self, task: TaskRecord, node_id: str, reason: str, now: float) -> None:
        """End the attempt as lost with coordinator node ``node_id`` and queue the
        task again at once. The task and the worker did nothing wrong, so neither
        is charged: no classification as a worker crash (no poison verdict), no
        breaker, health or failure count, no retry spent, no worker avoided. A task
        that takes its host down, coordinator node and all, would loop so forever:
        ``is_loss_forgiven`` allows only ``max_coordinator_losses`` per task."""
        attempt = self.end_attempt(
            task, AttemptStatus.LOST, now, failure=FailureKind.COORDINATOR_LOST, reason=reason
        )
        evidence = FailureEvidence(failure_kind=FailureKind.COORDINATOR_LOST, error=reason)
        classification = classify(evidence, self.config.classification_rules)
        attempt.failure_type = classification.failure_type
        attempt.evidence = classification.evidence_text
        attempt.classified_by = classification.rule_name
        attempt.lost_with_node = node_id
        attempt.retry_delay_s = 0.0
        attempt.recovery_reason = "queued again at once; not counted against the task"
        self.set_status(task, TaskStatus.PENDING, f"retry after attempt {attempt.number}: {reason}")
        self.events.append(RetryScheduled(task.id, attempt.number + 1, now, 0.0))
        self.make_ready(task, now)

    def is_loss_forgiven(self, task: TaskRecord) -> bool:
        """Whether losing ``task``'s attempt with a coordinator node goes uncharged."""
        forgiven = sum(1 for a in task.attempts if a.lost_with_node is not None)
        return forgiven < self.config.max_coordinator_losses

    def expire_silent_workers(self, now: float) -> None:
        for worker in self.workers.values():
            silent_for = now - worker.last_seen_at
            if (
                worker.status is not WorkerStatus.OFFLINE
                and silent_for >= self.config.worker_timeout_s
            ):
                self.set_worker_status(
                    worker, WorkerStatus.OFFLINE, f"no heartbeat for {silent_for:.0f}s"
                )
                if (worker.leases or worker.incident_tasks) and not worker.is_stranded:
                    self.note_health(worker.id, went_silent(now), now)

    def expire_lease(self, task_id: str, fence: int, now: float) -> bool:
        """End an expired lease as lost. False when it was renewed (re-armed) or is moot."""
        task = self.tasks[task_id]
        lease = task.lease
        if lease is None or lease.fence != fence:
            return False
        if lease.expires_at > now:
            return False
        worker = self.workers.get(lease.worker_id)
        silent_for = now - worker.last_seen_at if worker else self.config.lease_timeout_s
        reason = f"lease expired: no heartbeat from {lease.worker_id} for {silent_for:.1f}s"
        self.lose_attempt(task, reason, now)
        return True

    def forgive_downtime(self, now: float, *, connections_lost: bool) -> None:
        """The coordinator's own downtime is not counted as worker silence;
        after a restart (``connections_lost``) every connection is gone too."""
        for worker in self.workers.values():
            worker.last_seen_at = max(worker.last_seen_at, now)
            if connections_lost and worker.status is WorkerStatus.ONLINE:
                self.set_worker_status(worker, WorkerStatus.SUSPECT, "coordinator restarted")

    def set_worker_status(self, worker: WorkerRecord, status: WorkerStatus, reason: str) -> None:
        if worker.status is status:
            return
        old = worker.status
        worker.status, worker.status_reason = status, reason
        self.events.append(WorkerStatusChanged(worker.id, old, status, reason))

    # -- queries -----------------------------------------------------------

    def assignable_workers(self) -> Iterable[WorkerRecord]:
        return (w for w in self.workers.values() if w.free_slots > 0 and self.takes_work(w))

    def takes_work(self, worker: WorkerRecord) -> bool:
        """Connected, not quarantined, and past its health check if it has one."""
        return worker.status is WorkerStatus.ONLINE and worker.health.admits_work

    def workers_satisfying(self, requirements: RequirementSet) -> list[WorkerRecord]:
        return [
            w
            for w in self.workers.values()
            if self.takes_work(w) and satisfies(requirements, w.capabilities, w.id)
        ]

    def is_current_lease_ref(self, worker_id: str, ref: LeaseRef) -> bool:
        task = self.tasks.get(ref.task_id)
        return task is not None and self.is_current_lease(task, worker_id, ref.fence)

    def current_lease_refs(self, worker_id: str, held: list[LeaseRef]) -> list[LeaseRef]:
        """The attempts of ``held`` that are still the worker's: what a heartbeat, or
        a registration once applied, renewed."""
        return [ref for ref in held if self.is_current_lease_ref(worker_id, ref)]
