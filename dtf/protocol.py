"""Messages between worker agents and the coordinator.

A worker holds one WebSocket (``/api/workers/ws``) for register, assignments,
progress and outcomes, and sends heartbeats from a thread of its own over
HTTP (``POST /api/workers/{id}/heartbeat``) so a busy or wedged event loop
never looks like a dead machine. Every message is a JSON object tagged by
``type``. Outcomes are keyed by (task id, attempt, fence) and safe to resend
until acknowledged.
"""

from __future__ import annotations

import msgspec
from msgspec import Struct

from dtf.core.model import Capabilities, LeaseRef, Outcome, TaskSpec


class Register(Struct, frozen=True, tag="register", forbid_unknown_fields=True):
    worker_id: str
    session: str
    capabilities: Capabilities
    slots: int
    held: list[LeaseRef] = []


class Started(Struct, frozen=True, tag="started", forbid_unknown_fields=True):
    """The attempt's process started ``ran_for_s`` seconds before this was sent
    (a worker may hold the report back briefly to send it with the outcome)."""

    lease: LeaseRef
    ran_for_s: float = 0.0


class OutcomeReport(Struct, frozen=True, tag="outcome", forbid_unknown_fields=True):
    lease: LeaseRef
    outcome: Outcome


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


class Assign(Struct, frozen=True, tag="assign"):
    task_id: str
    attempt: int
    fence: int
    spec: TaskSpec
    lease_timeout_s: float

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


class ErrorMessage(Struct, frozen=True, tag="error"):
    message: str


WorkerMessage = Register | Started | OutcomeReport
CoordinatorMessage = Registered | Assign | Cancel | OutcomeAck | ErrorMessage

worker_message_decoder = msgspec.json.Decoder(WorkerMessage)
coordinator_message_decoder = msgspec.json.Decoder(CoordinatorMessage)
json_encoder = msgspec.json.Encoder()
