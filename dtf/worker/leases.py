"""The leases a worker holds, shared by its event loop and heartbeat thread.

A lease is held from its assignment until the coordinator acknowledges the
attempt's outcome (or the attempt is dropped). While the attempt runs, the
lease must keep being renewed: each successful heartbeat renews the leases
the coordinator lists as ``renewed``, dated by when that heartbeat was *sent*
(the coordinator renewed no earlier than that). A running attempt whose
lease was not renewed within ``lease_timeout_s`` less a safety margin is
fenced: the coordinator may already have given it to another worker, so it
must stop now. A running lease that a successful heartbeat carried but the
coordinator did not renew is no longer current there and is fenced at once.

All times are ``time.monotonic()`` values passed in by the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dtf.core.model import LeaseRef

SAFETY_MARGIN = 0.1


@dataclass
class _Lease:
    renewed_at: float
    timeout_s: float
    is_running: bool = True
    pgid: int | None = None


@dataclass(frozen=True)
class FencedLease:
    lease: LeaseRef
    pgid: int | None
    reason: str


class LeaseTable:
    def __init__(self, safety_margin: float = SAFETY_MARGIN) -> None:
        self.safety_margin = safety_margin
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._leases: dict[LeaseRef, _Lease] = {}
        self._max_fence_seen = 0
        # when a waiting watchdog wakes by itself; -inf while none waits
        self._watchdog_wakes_at = float("-inf")

    def see_fence(self, fence: int) -> None:
        """Record an assignment's fence, whether or not the worker takes it."""
        with self._lock:
            self._max_fence_seen = max(self._max_fence_seen, fence)

    def add(self, lease: LeaseRef, now: float, timeout_s: float) -> None:
        """Hold ``lease``; the watchdog is woken only if it would sleep past its deadline
        (a new lease's deadline is usually the latest: waking a thread per task is not free)."""
        with self._lock:
            entry = self._leases[lease] = _Lease(renewed_at=now, timeout_s=timeout_s)
            self._max_fence_seen = max(self._max_fence_seen, lease.fence)
            if self._deadline(entry) < self._watchdog_wakes_at:
                self._changed.notify_all()

    def set_process(self, lease: LeaseRef, pgid: int | None) -> None:
        with self._lock:
            entry = self._leases.get(lease)
            if entry is not None:
                entry.pgid = pgid

    def finish(self, lease: LeaseRef) -> bool:
        """The attempt ended; its lease is held until the outcome is acknowledged.
        False when the lease was dropped (cancelled or fenced) while it ran."""
        with self._lock:
            entry = self._leases.get(lease)
            if entry is None:
                return False
            entry.is_running, entry.pgid = False, None
            return True

    def remove(self, lease: LeaseRef) -> bool:
        with self._lock:
            return self._leases.pop(lease, None) is not None

    def held(self) -> tuple[list[LeaseRef], int]:
        """What a heartbeat or registration reports: held leases and the highest fence seen."""
        with self._lock:
            return list(self._leases), self._max_fence_seen

    def renew(
        self,
        sent: Iterable[LeaseRef],
        renewed: Iterable[LeaseRef],
        sent_at: float,
        timeout_s: float,
    ) -> list[FencedLease]:
        """Apply a successful heartbeat; returns running leases the coordinator no longer has."""
        renewed_set = set(renewed)
        fenced = []
        with self._lock:
            for lease in sent:
                entry = self._leases.get(lease)
                if entry is None:
                    continue
                if lease in renewed_set:
                    entry.renewed_at = max(entry.renewed_at, sent_at)
                    entry.timeout_s = timeout_s
                elif entry.is_running:
                    del self._leases[lease]
                    reason = "the coordinator no longer holds this lease for this worker"
                    fenced.append(FencedLease(lease, entry.pgid, reason))
        return fenced

    def fence_expired(self, now: float) -> list[FencedLease]:
        """Remove and return running leases past their renewal deadline."""
        with self._lock:
            expired = [
                (lease, entry)
                for lease, entry in self._leases.items()
                if entry.is_running and now >= self._deadline(entry)
            ]
            for lease, _ in expired:
                del self._leases[lease]
        return [
            FencedLease(
                lease,
                entry.pgid,
                f"lease not renewed for {now - entry.renewed_at:.1f}s "
                f"(lease timeout {entry.timeout_s:g}s)",
            )
            for lease, entry in expired
        ]

    def next_deadline(self) -> float | None:
        with self._lock:
            return self._next_deadline()

    def wait_for_deadline(self, clock: Callable[[], float], max_wait_s: float) -> None:
        """Block until the earliest running lease's deadline, a lease is added,
        ``wake`` is called, or ``max_wait_s`` passed, whichever comes first."""
        with self._lock:
            deadline = self._next_deadline()
            now = clock()
            wait_s = max_wait_s if deadline is None else min(deadline - now, max_wait_s)
            if wait_s > 0:
                self._watchdog_wakes_at = now + wait_s
                try:
                    self._changed.wait(wait_s)
                finally:
                    self._watchdog_wakes_at = float("-inf")

    def wake(self) -> None:
        with self._lock:
            self._changed.notify_all()

    def _next_deadline(self) -> float | None:
        deadlines = [self._deadline(e) for e in self._leases.values() if e.is_running]
        return min(deadlines, default=None)

    def _deadline(self, entry: _Lease) -> float:
        return entry.renewed_at + entry.timeout_s * (1.0 - self.safety_margin)
