"""Per-attempt checkpoint tokens, handed to a task's process with its assignment.

A task process must not hold the worker's API key (a worker key may report
outcomes for any attempt its worker holds). Instead each ``Assign`` carries a
token that is an HMAC of (task id, attempt, fence) under a secret derived
from the admin key: it lets that attempt's process save checkpoints under
its own lease and read its task's checkpoints, nothing else. Every
coordinator sharing the admin key verifies it without storing anything, and
whether the lease is still current is decided by the state, as for outcomes.
"""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from dtf.core.model import LeaseRef
from dtf.core.state import State
from dtf.protocol import CheckpointGrant

TOKEN_PREFIX = "dtfcp"


class GrantIssuer:
    def __init__(self, admin_key: str) -> None:
        self._secret = hashlib.sha256(b"dtf checkpoint grants\0" + admin_key.encode()).digest()

    def token(self, lease: LeaseRef) -> str:
        """``dtfcp_<attempt>_<fence>_<mac>``: the task id is in every URL it is used with."""
        return f"{TOKEN_PREFIX}_{lease.attempt}_{lease.fence}_{self._mac(lease)}"

    def lease_of(self, task_id: str, token: str) -> LeaseRef | None:
        """The lease ``token`` was issued for, if it is a valid token for ``task_id``."""
        parts = token.split("_")
        if len(parts) != 4 or parts[0] != TOKEN_PREFIX:
            return None
        if not (parts[1].isdigit() and parts[2].isdigit()):
            return None
        lease = LeaseRef(task_id, int(parts[1]), int(parts[2]))
        return lease if hmac.compare_digest(parts[3], self._mac(lease)) else None

    def grant(self, state: State, lease: LeaseRef, base_url: str) -> CheckpointGrant:
        """What the attempt's process gets: where to send checkpoints, its token,
        and the checkpoint it resumes from."""
        task = state.tasks.get(lease.task_id)
        attempt = task.attempts[lease.attempt - 1] if task else None
        resumed = attempt.resumed_from if attempt else None
        return CheckpointGrant(
            base_url.rstrip("/"), self.token(lease), resumed.digest if resumed else None
        )

    def _mac(self, lease: LeaseRef) -> str:
        message = msgspec.json.encode([lease.task_id, lease.attempt, lease.fence])
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()
