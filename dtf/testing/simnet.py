"""The simulated network between simulated workers and the coordinator.

Messages are the real protocol structs (``dtf.protocol``) in an ``Envelope``
that says who sent it, on which session, and when. Delivery is late by a random
delay. What travels on a worker's WebSocket towards the worker (assignments,
cancels, acks) arrives in order, as TCP guarantees and the ``max_fence_seen``
rule relies on; everything else (heartbeats and their replies, started and
outcome reports) may arrive out of order, and worker reports may arrive twice.
A worker whose link is down neither sends nor receives; a coordinator restart
loses everything in flight.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from dtf import protocol as p

ToCoordinator = p.Register | p.Started | p.OutcomeReport | p.HeartbeatRequest
ToWorker = p.Registered | p.Assign | p.Cancel | p.OutcomeAck | p.ErrorMessage | p.HeartbeatReply


@dataclass(frozen=True)
class Envelope:
    """``request_sent_at`` pairs an HTTP reply with the heartbeat it answers."""

    worker_id: str
    session: str
    sent_at: float
    payload: ToCoordinator | ToWorker
    request_sent_at: float | None = None

    @property
    def is_to_coordinator(self) -> bool:
        return isinstance(self.payload, ToCoordinator)


class Network:
    def __init__(self, rng: random.Random, max_delay_s: float, duplicate_rate: float) -> None:
        self.rng = rng
        self.max_delay_s = max_delay_s
        self.duplicate_rate = duplicate_rate
        self.down_until: dict[str, float] = {}
        self._in_flight: list[tuple[float, int, Envelope]] = []
        self._order = 0
        self._channel_tail: dict[tuple[str, str], float] = {}
        self.delivered = 0
        self.duplicated = 0

    def is_up(self, worker_id: str, now: float) -> bool:
        return self.down_until.get(worker_id, 0.0) <= now

    def send(self, now: float, envelope: Envelope, *, may_duplicate: bool = False) -> None:
        """Deliver after a random delay, possibly twice."""
        if not self.is_up(envelope.worker_id, now):
            return
        self._push(now + self._delay(), envelope)
        if may_duplicate and self.rng.random() < self.duplicate_rate:
            self.duplicated += 1
            self._push(now + self._delay() * 3, envelope)

    def send_in_order(self, now: float, envelope: Envelope) -> None:
        """Deliver after a random delay but never before earlier messages on this session."""
        if not self.is_up(envelope.worker_id, now):
            return
        channel = (envelope.worker_id, envelope.session)
        due = max(now + self._delay(), self._channel_tail.get(channel, 0.0))
        self._channel_tail[channel] = due
        self._push(due, envelope)

    def deliver_due(self, now: float) -> list[Envelope]:
        """What arrives by ``now``, in arrival order; messages to or from a cut link are lost."""
        arrived = []
        while self._in_flight and self._in_flight[0][0] <= now:
            _, _, envelope = heapq.heappop(self._in_flight)
            if self.is_up(envelope.worker_id, now):
                arrived.append(envelope)
        self.delivered += len(arrived)
        return arrived

    def lose_everything(self) -> None:
        self._in_flight.clear()
        self._channel_tail.clear()

    def _delay(self) -> float:
        return self.rng.uniform(0.0, self.max_delay_s)

    def _push(self, due: float, envelope: Envelope) -> None:
        self._order += 1
        heapq.heappush(self._in_flight, (due, self._order, envelope))
