"""Messages between worker agents and the coordinator.

A worker holds one WebSocket (``/api/workers/ws``) for register, assignments,
progress and outcomes, and sends heartbeats from a thread of its own over
HTTP (``POST /api/workers/{id}/heartbeat``) so a busy or wedged event loop
never looks like a dead machine. Every message is a JSON object tagged by
``type``. Outcomes are keyed by (task id, attempt, fence) and safe to resend
until acknowledged.

A frame holds one message, or a JSON array of messages that were queued
together: a busy worker's started and outcome reports, and the coordinator's
acknowledgements and next assignments, then travel in one frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypeVar

import msgspec
from msgspec import Struct

from dtf.core.model import Capabilities, LeaseRef, Outcome, TaskSpec

APPLIED_SEQ_HEADER = "X-DTF-Applied-Seq"
"""On every HTTP response: how far the answering coordinator has applied the log."""
MIN_SEQ_HEADER = "X-DTF-Min-Seq"
"""On a request: answer from a state that has applied at least this far."""


class Register(Struct, frozen=True, tag="register", forbid_unknown_fields=True):
    """``max_fence_seen``: the highest fence this worker process was ever sent
    (None from workers that do not say)."""

    worker_id: str
    session: str
    capabilities: Capabilities
    slots: int
    held: list[LeaseRef] = []
    incarnation: str = ""
    health_check: str | None = None
    max_fence_seen: int | None = None


class Started(Struct, frozen=True, tag="started", forbid_unknown_fields=True):
    """The attempt's process started ``ran_for_s`` seconds before this was sent
    (a worker may hold the report back briefly to send it with the outcome)."""

    lease: LeaseRef
    ran_for_s: float = 0.0


class OutcomeReport(Struct, frozen=True, tag="outcome", forbid_unknown_fields=True):
    lease: LeaseRef
    outcome: Outcome


class HealthCheckReport(Struct, frozen=True, tag="health_check", forbid_unknown_fields=True):
    passed: bool
    detail: str = ""
    duration_s: float = 0.0


class HealthCheckRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /api/workers/{id}/health-check`` for workers that poll over HTTP."""

    session: str
    passed: bool
    detail: str = ""
    duration_s: float = 0.0


class HeartbeatRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /api/workers/{id}/heartbeat``."""

    session: str
    held: list[LeaseRef] = []
    max_fence_seen: int = 0


class HeartbeatReply(Struct, frozen=True):
    lease_timeout_s: float
    renewed: list[LeaseRef]


class Registered(Struct, frozen=True, tag="registered"):
    worker_id: str
    session: str
    lease_timeout_s: float
    heartbeat_interval_s: float


class LeasesRenewed(Struct, frozen=True, tag="leases_renewed"):
    """Sent once a registration holding attempts is applied: those it renewed, as a
    heartbeat reply lists them (any other it held is no longer the worker's)."""

    renewed: list[LeaseRef]
    lease_timeout_s: float


class CheckpointGrant(Struct, frozen=True):
    """What an attempt's process needs to save and load checkpoints: the
    coordinator URL the worker reached it at, a token good for this attempt's
    lease only, and the digest of the checkpoint the attempt resumes from."""

    url: str
    token: str
    resumed_from: str | None = None


class Assign(Struct, frozen=True, tag="assign"):
    task_id: str
    attempt: int
    fence: int
    spec: TaskSpec
    lease_timeout_s: float
    """What the lease has left when sent, not the full timeout: an assignment a node
    sends late (catching up on the log after a partition) must not give the worker
    more time than the coordinators will wait before running the task elsewhere."""
    checkpoint: CheckpointGrant | None = None

    @property
    def lease(self) -> LeaseRef:
        return LeaseRef(self.task_id, self.attempt, self.fence)


class Cancel(Struct, frozen=True, tag="cancel"):
    task_id: str
    attempt: int
    fence: int


class OutcomeAck(Struct, frozen=True, tag="outcome_ack"):
    task_id: str
    attempt: int
    fence: int


class RunHealthCheck(Struct, frozen=True, tag="run_health_check"):
    """Run the health check now and report it; no work comes until it passes."""

    reason: str


class ErrorMessage(Struct, frozen=True, tag="error", omit_defaults=True):
    """``lease`` names the report the coordinator refused for good (a report
    for an attempt it does not know or the worker does not hold): resending
    it cannot succeed, so the worker drops it."""

    message: str
    lease: LeaseRef | None = None


WorkerMessage = Register | Started | OutcomeReport | HealthCheckReport
CoordinatorMessage = (
    Registered | LeasesRenewed | Assign | Cancel | OutcomeAck | RunHealthCheck | ErrorMessage
)

worker_message_decoder = msgspec.json.Decoder(WorkerMessage)
coordinator_message_decoder = msgspec.json.Decoder(CoordinatorMessage)
worker_frame_decoder = msgspec.json.Decoder(WorkerMessage | list[WorkerMessage])
coordinator_frame_decoder = msgspec.json.Decoder(CoordinatorMessage | list[CoordinatorMessage])
json_encoder = msgspec.json.Encoder()

T = TypeVar("T")


def encode_frame(messages: Sequence[Struct]) -> bytes:
    """One message as an object, several as an array."""
    return json_encoder.encode(messages[0] if len(messages) == 1 else messages)


def frame_messages(decoded: T | list[T]) -> list[T]:
    return decoded if isinstance(decoded, list) else [decoded]


def take_queued(queue: asyncio.Queue[T], first: T, limit: int = 256) -> list[T]:
    """``first`` plus whatever else is already queued, without waiting."""
    batch = [first]
    while len(batch) < limit and not queue.empty():
        batch.append(queue.get_nowait())
    return batch
