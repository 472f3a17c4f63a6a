"""Circuit breakers per worker and per hardware class (closed / open / half-open).

How this works: a closed breaker counts consecutive failures; a success
resets the count. At ``threshold`` failures it opens: nothing is sent. Once
``reset_time_s`` has passed since the last failure (late failures of work
sent before it opened push this back), ``allows`` lets a probe
through; dispatching it (``on_dispatch``) moves the breaker to half-open,
where nothing else is sent. The probe's success closes the breaker, its
failure opens it again. A probe that never reports (its task was cancelled)
is given up after another ``reset_time_s``, and a new probe may go.

``allows`` is a query and changes nothing, so matching may ask about many
workers; only the assignment actually made is reported with ``on_dispatch``.
States move only through ``move_to`` and ``BREAKER_TRANSITIONS``. Times are
passed in. Breakers are msgspec structs and live in the state snapshot.
Defaults are the seeds': ``circuit-breaker-threshold`` 3,
``circuit-breaker-reset-time`` 300 s.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from msgspec import Struct

from dtf.core.failures import FailureType
from dtf.core.model import HardwareClass
from dtf.errors import InvalidTransition

DEFAULT_THRESHOLD = 3
DEFAULT_RESET_TIME_S = 300.0

# Which failures count against the worker and against its hardware class. A
# task's own errors (software error, running out of memory at its batch size)
# blame neither; a timeout is the task's until patterns say otherwise. Nor does
# a communication error: the service the task talks to is as likely at fault,
# and an outage of one would otherwise shut out the whole fleet.
WORKER_FAULTS = frozenset(
    {
        FailureType.WORKER_CRASH,
        FailureType.HARDWARE_ERROR,
        FailureType.CUDA_ERROR,
        FailureType.BROWSER_CRASH,
        FailureType.WEBGPU_CONTEXT_LOST,
    }
)
HARDWARE_FAULTS = frozenset(
    {FailureType.HARDWARE_ERROR, FailureType.CUDA_ERROR, FailureType.WEBGPU_CONTEXT_LOST}
)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


BREAKER_TRANSITIONS: dict[BreakerState, frozenset[BreakerState]] = {
    BreakerState.CLOSED: frozenset({BreakerState.OPEN}),
    BreakerState.OPEN: frozenset({BreakerState.HALF_OPEN}),
    BreakerState.HALF_OPEN: frozenset({BreakerState.CLOSED, BreakerState.OPEN}),
}


class BreakerChange(Struct, frozen=True):
    """A state change, for the event log: which breaker, from what, to what, why."""

    breaker: str
    old: BreakerState
    new: BreakerState
    at: float
    reason: str


class CircuitBreaker(Struct):
    name: str
    threshold: int = DEFAULT_THRESHOLD
    reset_time_s: float = DEFAULT_RESET_TIME_S
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    failing_sources: list[str] = []
    last_failure_at: float | None = None
    changed_at: float | None = None

    @property
    def next_probe_at(self) -> float | None:
        """When an open breaker admits its probe, or a half-open one gives up on it."""
        if self.state is BreakerState.OPEN:
            return (self.last_failure_at or 0.0) + self.reset_time_s
        if self.state is BreakerState.HALF_OPEN:
            return (self.changed_at or 0.0) + self.reset_time_s
        return None

    def allows(self, now: float) -> bool:
        probe_at = self.next_probe_at
        return probe_at is None or now >= probe_at

    def on_dispatch(self, now: float) -> BreakerChange | None:
        """Work was sent; from an open breaker that work is the probe."""
        if not self.allows(now) or self.state is BreakerState.CLOSED:
            return None
        if self.state is BreakerState.HALF_OPEN:
            self.changed_at = now
            return None
        waited = now - (self.last_failure_at or 0.0)
        return self.move_to(BreakerState.HALF_OPEN, now, f"probe sent after {waited:g}s open")

    def on_failure(self, now: float, source: str | None = None) -> BreakerChange | None:
        """Count a failure. With ``source`` (a worker, for a hardware class's
        breaker) only failures from distinct sources count, so one bad machine
        cannot open its whole class."""
        self.last_failure_at = now
        if self.state is BreakerState.HALF_OPEN:
            return self.move_to(BreakerState.OPEN, now, "a failure while half-open")
        if self.state is BreakerState.OPEN:
            return None
        if source is not None:
            if source in self.failing_sources:
                return None
            self.failing_sources.append(source)
        self.consecutive_failures += 1
        if self.consecutive_failures < self.threshold:
            return None
        return self.move_to(
            BreakerState.OPEN,
            now,
            f"{self.consecutive_failures} consecutive failures (threshold {self.threshold})",
        )

    def on_success(self, now: float) -> BreakerChange | None:
        """A success closes a half-open breaker; one finishing while open changes
        nothing, since only a probe sent after the reset time proves recovery."""
        if self.state is BreakerState.OPEN:
            return None
        self.consecutive_failures = 0
        self.failing_sources = []
        if self.state is BreakerState.CLOSED:
            return None
        return self.move_to(BreakerState.CLOSED, now, "the probe succeeded")

    def move_to(self, state: BreakerState, now: float, reason: str) -> BreakerChange:
        if state not in BREAKER_TRANSITIONS[self.state]:
            raise InvalidTransition(
                f"circuit breaker {self.name} is {self.state.value}; it cannot become {state.value}"
            )
        change = BreakerChange(self.name, self.state, state, now, reason)
        self.state = state
        self.changed_at = now
        if state is BreakerState.CLOSED:
            self.consecutive_failures = 0
            self.failing_sources = []
        return change


class Breakers(Struct):
    """One breaker per worker and one per hardware class, made at its first
    failure; a worker or class without one is closed."""

    threshold: int = DEFAULT_THRESHOLD
    reset_time_s: float = DEFAULT_RESET_TIME_S
    workers: dict[str, CircuitBreaker] = {}
    hardware: dict[HardwareClass, CircuitBreaker] = {}

    def for_worker(self, worker_id: str) -> CircuitBreaker:
        if worker_id not in self.workers:
            self.workers[worker_id] = self._new(f"worker {worker_id}")
        return self.workers[worker_id]

    def for_hardware(self, hardware_class: HardwareClass) -> CircuitBreaker:
        if hardware_class not in self.hardware:
            self.hardware[hardware_class] = self._new(f"hardware {hardware_class}")
        return self.hardware[hardware_class]

    def allows(self, now: float, *, worker_id: str, hardware_class: HardwareClass) -> bool:
        """Both the worker's and the hardware class's breakers must let work through."""
        return all(b.allows(now) for b in self._existing(worker_id, hardware_class))

    def on_dispatch(
        self, now: float, *, worker_id: str, hardware_class: HardwareClass
    ) -> list[BreakerChange]:
        return self._apply(self._existing(worker_id, hardware_class), lambda b: b.on_dispatch(now))

    def on_failure(
        self,
        now: float,
        *,
        worker_id: str | None,
        hardware_class: HardwareClass | None,
        source: str | None = None,
    ) -> list[BreakerChange]:
        """Count a failure against the worker and/or the hardware class (None: not
        blamed). The class counts distinct workers (``source``), given a worker."""
        changes = []
        if worker_id is not None:
            changes.append(self.for_worker(worker_id).on_failure(now))
        if hardware_class is not None:
            changes.append(self.for_hardware(hardware_class).on_failure(now, source))
        return [change for change in changes if change is not None]

    def on_success(
        self, now: float, *, worker_id: str, hardware_class: HardwareClass
    ) -> list[BreakerChange]:
        return self._apply(self._existing(worker_id, hardware_class), lambda b: b.on_success(now))

    def _existing(self, worker_id: str, hardware_class: HardwareClass) -> list[CircuitBreaker]:
        found = (self.workers.get(worker_id), self.hardware.get(hardware_class))
        return [breaker for breaker in found if breaker is not None]

    @staticmethod
    def _apply(
        breakers: list[CircuitBreaker], event: Callable[[CircuitBreaker], BreakerChange | None]
    ) -> list[BreakerChange]:
        return [change for change in map(event, breakers) if change is not None]

    def _new(self, name: str) -> CircuitBreaker:
        return CircuitBreaker(name, threshold=self.threshold, reset_time_s=self.reset_time_s)
