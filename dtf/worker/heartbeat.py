"""Heartbeats and self-fencing, on threads of their own.

``HeartbeatThread`` renews leases over HTTP every heartbeat interval, so a
busy or wedged event loop never looks like a dead machine. ``Watchdog``
sleeps until the earliest lease deadline and fences what was not renewed in
time: it SIGKILLs the attempt's process group itself (neither a wedged loop
nor a hanging heartbeat request can delay that) and then tells the loop,
which drops the attempt. A running lease that a successful heartbeat carried
but the coordinator did not renew is fenced the same way, at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import msgspec

from dtf.core.model import LeaseRef
from dtf.protocol import HeartbeatReply, HeartbeatRequest, json_encoder
from dtf.worker.connection import Endpoints
from dtf.worker.leases import FencedLease, LeaseTable

logger = logging.getLogger(__name__)

MIN_REQUEST_TIMEOUT_S = 0.2
MAX_REQUEST_TIMEOUT_S = 10.0
WATCHDOG_MAX_SLEEP_S = 60.0
SESSION_UNKNOWN = frozenset({404, 409})

OnFenced = Callable[[FencedLease], object]


@dataclass(frozen=True)
class Target:
    """Where and as whom to beat, set once a session is registered."""

    endpoints: Endpoints
    session: str
    interval_s: float
    lease_timeout_s: float


def kill_fenced(fenced: list[FencedLease], on_fenced: OnFenced) -> None:
    for lease in fenced:
        logger.warning(
            "self-fencing task %s attempt %d (fence %d): %s; killing it, no outcome reported",
            lease.lease.task_id,
            lease.lease.attempt,
            lease.lease.fence,
            lease.reason,
            extra={"event": "self_fenced", "task_id": lease.lease.task_id},
        )
        if lease.pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(lease.pgid, signal.SIGKILL)
        on_fenced(lease)


class Watchdog(threading.Thread):
    def __init__(self, leases: LeaseTable, on_fenced: OnFenced) -> None:
        super().__init__(name="dtf-lease-watchdog", daemon=True)
        self.leases = leases
        self.on_fenced = on_fenced
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        self.leases.wake()

    def run(self) -> None:
        while not self.stopping:
            try:
                kill_fenced(self.leases.fence_expired(time.monotonic()), self.on_fenced)
                self.leases.wait_for_deadline(time.monotonic, WATCHDOG_MAX_SLEEP_S)
            except Exception:  # the watchdog must outlive any one failure
                logger.exception("lease watchdog step failed; continuing")
                time.sleep(0.1)


class HeartbeatThread(threading.Thread):
    def __init__(
        self,
        worker_id: str,
        api_key: str,
        leases: LeaseTable,
        *,
        on_fenced: OnFenced,
        on_session_rejected: Callable[[str], object],
    ) -> None:
        super().__init__(name="dtf-heartbeat", daemon=True)
        self.worker_id = worker_id
        self.leases = leases
        self.on_fenced = on_fenced
        self.on_session_rejected = on_session_rejected
        self.client = httpx.Client(headers={"Authorization": f"Bearer {api_key}"})
        self.target: Target | None = None
        self.wake = threading.Event()
        self.stopping = False
        self.release_all = False
        self.failing_since: float | None = None

    def point_at(self, target: Target) -> None:
        """Beat for a newly registered session, starting one interval from now."""
        self.target = target
        self.wake.set()

    def stop(self, *, release_all: bool = False) -> None:
        """Stop beating; with ``release_all``, first tell the coordinator that this
        worker holds nothing any more, so its attempts are retried at once."""
        self.release_all = release_all
        self.stopping = True
        self.wake.set()

    def run(self) -> None:
        try:
            while not self.stopping:
                self.wake.clear()
                target = self.target
                self.wake.wait(target.interval_s if target is not None else None)
                if self.stopping or self.wake.is_set():
                    continue
                try:
                    self.beat()
                except Exception:  # one bad beat must not end the heartbeats
                    logger.exception("heartbeat failed unexpectedly; continuing")
            if self.release_all:
                self.beat(held=[])
        finally:
            self.client.close()

    def beat(self, *, held: list[LeaseRef] | None = None) -> None:
        """One heartbeat; ``held`` overrides what the lease table holds."""
        target = self.target
        if target is None:
            return
        table_held, max_fence_seen = self.leases.held()
        sent = table_held if held is None else held
        sent_at = time.monotonic()
        reply = self.post(target, HeartbeatRequest(target.session, sent, max_fence_seen))
        if reply is not None:
            renewal = self.leases.renew(sent, reply.renewed, sent_at, reply.lease_timeout_s)
            kill_fenced(renewal, self.on_fenced)

    def post(self, target: Target, request: HeartbeatRequest) -> HeartbeatReply | None:
        timeout_s = min(
            max(MIN_REQUEST_TIMEOUT_S, target.lease_timeout_s / 2), MAX_REQUEST_TIMEOUT_S
        )
        try:
            response = self.client.post(
                target.endpoints.heartbeat_url(self.worker_id),
                content=json_encoder.encode(request),
                headers={"Content-Type": "application/json"},
                timeout=timeout_s,
            )
        except httpx.HTTPError as exc:
            self.note_failure(target, f"{type(exc).__name__}: {exc}")
            return None
        if response.status_code in SESSION_UNKNOWN:
            logger.warning(
                "coordinator rejected session %s (%d: %s); reconnecting",
                target.session,
                response.status_code,
                response.text[:300],
            )
            self.on_session_rejected(target.session)
            return None
        if response.is_error:
            self.note_failure(target, f"HTTP {response.status_code}: {response.text[:300]}")
            return None
        try:
            reply = msgspec.json.decode(response.content, type=HeartbeatReply)
        except msgspec.DecodeError as exc:
            self.note_failure(target, f"unreadable reply: {exc}")
            return None
        self.note_success(target)
        return reply

    def note_failure(self, target: Target, error: str) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            logger.warning("heartbeat to %s failed: %s", target.endpoints.base_url, error)
        else:
            logger.debug("heartbeat to %s failed again: %s", target.endpoints.base_url, error)

    def note_success(self, target: Target) -> None:
        if self.failing_since is not None:
            logger.info(
                "heartbeats to %s succeed again after %.1fs",
                target.endpoints.base_url,
                time.monotonic() - self.failing_since,
            )
            self.failing_since = None
