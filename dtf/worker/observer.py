"""How one attempt's process group is made known: to the lease table (so
self-fencing can kill it) and the coordinator (``Started``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from dtf.core.model import LeaseRef
from dtf.protocol import Started, WorkerMessage
from dtf.worker.audit import AuditLog
from dtf.worker.leases import LeaseTable
from dtf.worker.reaper import Reaper

STARTED_DELAY_S = 0.1


class AttemptObserver:
    """Ties an attempt's process group to the reaper, the lease table and the coordinator.

    ``Started`` goes out once the process has run for ``STARTED_DELAY_S``; a
    task that ends sooner sends only its outcome, whose duration tells the
    coordinator when it started. Each message is a journaled command (in a
    cluster: appended to etcd and applied by every coordinator), so a short
    task costs one instead of two; on a busy worker even a ``true`` task often
    took over 10 ms from spawn to reaped exit. The report says how long the
    process had been running, so the recorded start time stays exact.
    """

    def __init__(
        self,
        lease: LeaseRef,
        reaper: Reaper,
        leases: LeaseTable,
        send: Callable[[WorkerMessage], None],
        audit: AuditLog | None = None,
    ) -> None:
        self.lease, self.reaper, self.leases, self.send = lease, reaper, leases, send
        self.audit = audit
        self.started_timer: asyncio.TimerHandle | None = None
        self.is_started_reported = False
        self.started_at = 0.0

    def process_started(self, pgid: int) -> None:
        self.reaper.ensure_running()
        self.leases.set_process(self.lease, pgid)
        self.started_at = time.monotonic()
        if self.audit is not None:
            self.audit.started(self.lease, pgid)
        loop = asyncio.get_running_loop()
        self.started_timer = loop.call_later(STARTED_DELAY_S, self.report_started)

    def process_ended(self, pgid: int) -> None:
        self.leases.set_process(self.lease, None)
        if self.audit is not None:
            is_dropped = self.lease not in self.leases.held()[0]
            self.audit.ended(self.lease, pgid, is_dropped=is_dropped)

    def report_started(self) -> None:
        """Send ``Started`` now if a process started and it has not been sent."""
        if self.started_timer is not None and not self.is_started_reported:
            self.is_started_reported = True
            self.started_timer.cancel()
            self.send(Started(self.lease, time.monotonic() - self.started_at))

    def close(self) -> None:
        if self.started_timer is not None:
            self.started_timer.cancel()
