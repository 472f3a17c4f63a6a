"""Commands: the only way coordinator state changes.

Each command is journaled before it is applied and carries the time it was
issued (``at``, wall-clock seconds) so that replaying the journal rebuilds the
same state on any node. Commands are tagged msgspec structs; ``encode`` and
``decode`` are the journal's byte format.
"""

from __future__ import annotations

import msgspec
from msgspec import Struct

from dtf.core.lifecycle import StateConfig
from dtf.core.model import Capabilities, LeaseRef, Outcome, TaskSpec
from dtf.core.records import CheckpointKind, Role


class NewTask(Struct, frozen=True, array_like=True):
    task_id: str
    spec: TaskSpec


class SubmitTasks(Struct, frozen=True, tag="submit_tasks"):
    at: float
    tasks: list[NewTask]
    reject_unsatisfiable: bool = False


class CancelTask(Struct, frozen=True, tag="cancel_task"):
    at: float
    task_id: str
    reason: str = "cancelled by user"


class RegisterWorker(Struct, frozen=True, tag="register_worker"):
    """A worker (re)connects. ``held`` lists the attempts it still holds:
    running ones and finished ones whose outcome it has not had acknowledged.
    Any other lease the coordinator has for it is ended as lost. ``node_id``:
    the cluster node the worker is connected through, and ``node_incarnation``,
    that node's process (a node restarted under the same id is another
    incarnation), both filled in by the node that journals this ("" for a
    standalone coordinator and in old journals). ``max_fence_seen``: the highest
    fence the worker process was sent; when it registered before under the same
    ``incarnation``, a lease with a higher fence never reached it (the
    connection it was sent on ended first) and is queued again uncharged."""

    at: float
    worker_id: str
    session: str
    capabilities: Capabilities
    slots: int
    held: list[LeaseRef] = []
    incarnation: str = ""
    health_check: str | None = None
    node_id: str = ""
    node_incarnation: str = ""
    max_fence_seen: int | None = None


class WorkerDisconnected(Struct, frozen=True, tag="worker_disconnected"):
    at: float
    worker_id: str
    session: str


class Heartbeat(Struct, frozen=True, tag="heartbeat"):
    """Renews the leases in ``held``. A lease of this worker that is absent
    from ``held`` although its fence is at most ``max_fence_seen`` was dropped
    by the worker (it self-fenced) and ends as lost. ``node_id``: the cluster
    node that journals this and its ``node_incarnation``, filled in by that
    node ("" for a standalone coordinator and in old journals)."""

    at: float
    worker_id: str
    session: str
    held: list[LeaseRef] = []
    max_fence_seen: int = 0
    node_id: str = ""
    node_incarnation: str = ""


class TaskStarted(Struct, frozen=True, tag="task_started"):
    at: float
    worker_id: str
    lease: LeaseRef
    ran_for_s: float = 0.0


class ReportOutcome(Struct, frozen=True, tag="report_outcome"):
    at: float
    worker_id: str
    lease: LeaseRef
    outcome: Outcome


class RecordCheckpoint(Struct, frozen=True, tag="record_checkpoint"):
    """A task saved a checkpoint whose blob (``digest``) is already stored.
    Accepted only under the task's current lease, so a fenced attempt can
    never replace the checkpoint of the attempt that superseded it."""

    at: float
    worker_id: str
    lease: LeaseRef
    digest: str
    size: int
    kind: CheckpointKind
    step: int | None = None


class Tick(Struct, frozen=True, tag="tick"):
    """The clock: expires leases and workers, releases delayed retries,
    advances fallback requirements. Submitted only when something is due."""

    at: float


class CoordinatorStarted(Struct, frozen=True, tag="coordinator_started"):
    """A coordinator (re)started, or a cluster's new leader took over the clock.
    Its downtime is not held against workers: every live lease gets a fresh
    lease period from ``at``. ``connections_lost``: every worker connection
    died with the coordinator, so connected workers become suspect until they
    register again; False for a new cluster leader, whose workers stay
    connected to the other coordinators (and to itself)."""

    at: float
    connections_lost: bool = True


class CoordinatorNodeLost(Struct, frozen=True, tag="coordinator_node_lost"):
    """The cluster's leader found ``node_id``'s ``node_incarnation`` gone from
    the node registry while workers were still connected through it: they can
    reach no live coordinator, so they get no new work, and the leases they
    lose meanwhile are the cluster's loss, not the tasks' or the workers'.
    Workers connected through another incarnation of the node are not
    touched; an empty ``node_incarnation`` (old journals) means every one.
    Only the leader journals this, fenced by its epoch."""

    at: float
    node_id: str
    node_incarnation: str = ""


class Configure(Struct, frozen=True, tag="configure"):
    """New settings take effect from this point of the journal on."""

    at: float
    config: StateConfig


class ReportHealthCheck(Struct, frozen=True, tag="report_health_check"):
    """A worker ran its health check: before real work, or to leave quarantine."""

    at: float
    worker_id: str
    session: str
    passed: bool
    detail: str = ""
    duration_s: float = 0.0


class SetWorkerEnabled(Struct, frozen=True, tag="set_worker_enabled"):
    """An admin takes a worker out of service, or puts it back (ending any quarantine)."""

    at: float
    worker_id: str
    enabled: bool
    reason: str = ""


class CreateApiKey(Struct, frozen=True, tag="create_api_key"):
    at: float
    key_id: str
    role: Role
    key_hash: str
    name: str = ""


Command = (
    SubmitTasks
    | CancelTask
    | RegisterWorker
    | WorkerDisconnected
    | Heartbeat
    | TaskStarted
    | ReportOutcome
    | RecordCheckpoint
    | Tick
    | CoordinatorStarted
    | CoordinatorNodeLost
    | CreateApiKey
    | Configure
    | ReportHealthCheck
    | SetWorkerEnabled
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Command)


def encode(command: Command) -> bytes:
    return _encoder.encode(command)


def decode(data: bytes) -> Command:
    command: Command = _decoder.decode(data)
    return command
