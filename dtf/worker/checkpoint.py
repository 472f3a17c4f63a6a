"""Checkpoints for long tasks: save progress, and resume from it after a retry.

Inside a task that dtf runs::

    from dtf.worker import checkpoint

    state = checkpoint.load(default={"step": 0})   # the latest checkpoint, or the default
    for step in range(state["step"], 100):
        ...
        checkpoint.save({"step": step + 1}, step=step + 1)

A checkpoint is bytes or any JSON value, stored content-addressed by the
coordinator. When an attempt dies (its worker crashed, it was killed, its
lease expired) the next attempt's ``load`` returns the latest checkpoint any
attempt of the task saved. A save from an attempt whose lease is no longer
current is refused (``Conflict``), so a fenced "zombie" attempt can never
overwrite the progress of the attempt that replaced it.

The worker's executor passes the coordinator URL and a token valid for this
attempt's lease only in ``DTF_CHECKPOINT_URL`` and ``DTF_CHECKPOINT_TOKEN``
(the task never sees the worker's API key). Outside a dtf task these are
missing and every call raises ``NotInTask``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from dtf import errors
from dtf.client import error_from_response

__all__ = ["NotInTask", "TaskCheckpoints", "available", "load", "resumed_from", "save"]

log = logging.getLogger(__name__)

URL_ENV = "DTF_CHECKPOINT_URL"
TOKEN_ENV = "DTF_CHECKPOINT_TOKEN"
RESUMED_FROM_ENV = "DTF_CHECKPOINT_RESUMED_FROM"
TIMEOUT_S = 30.0
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0)


class NotInTask(errors.DtfError):
    """A checkpoint call made outside a task run by a dtf worker."""


@dataclass(frozen=True)
class TaskCheckpoints:
    """The checkpoints of one attempt's task; ``from_env`` builds it in a task process."""

    url: str
    token: str
    task_id: str
    attempt: int
    fence: int
    resumed_from: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TaskCheckpoints:
        missing = [
            name
            for name in (URL_ENV, TOKEN_ENV, "DTF_TASK_ID", "DTF_ATTEMPT", "DTF_FENCE")
            if not environ.get(name)
        ]
        if missing:
            raise NotInTask(
                f"checkpoints work only inside a task run by a dtf worker ({', '.join(missing)} "
                "not set); submit this code as a dtf task, or guard the call with "
                "`checkpoint.is_in_task()`"
            )
        return cls(
            environ[URL_ENV].rstrip("/"),
            environ[TOKEN_ENV],
            environ["DTF_TASK_ID"],
            int(environ["DTF_ATTEMPT"]),
            int(environ["DTF_FENCE"]),
            environ.get(RESUMED_FROM_ENV) or None,
        )

    @property
    def task_url(self) -> str:
        return f"{self.url}/api/tasks/{quote(self.task_id, safe='')}/checkpoints"

    def save(self, value: Any, *, step: int | None = None) -> str:
        """Save ``value`` (bytes, or a JSON value) as the task's latest checkpoint; its digest."""
        content, media_type = encode(value)
        params: dict[str, int] = {"attempt": self.attempt, "fence": self.fence}
        if step is not None:
            params["step"] = step
        response = self.request(
            "POST", self.task_url, params=params, content=content, media_type=media_type
        )
        digest: str = response.json()["digest"]
        return digest

    def load(self, default: Any = None) -> Any:
        """The task's latest checkpoint as saved (bytes or the JSON value), or ``default``."""
        try:
            response = self.request("GET", f"{self.task_url}/latest")
        except errors.NotFound:
            return default
        if response.headers.get("content-type", "").startswith("application/json"):
            return msgspec.json.decode(response.content)
        return response.content

    def available(self) -> bool:
        """Does the task have a checkpoint to load? (A saved JSON ``null`` counts.)"""
        missing = object()
        return self.load(default=missing) is not missing

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, int] | None = None,
        content: bytes | None = None,
        media_type: str | None = None,
    ) -> httpx.Response:
        """One call, tried again while the coordinator is unreachable or unavailable;
        safe because a save of the same content is idempotent."""
        headers = {"Authorization": f"Bearer {self.token}"}
        if media_type is not None:
            headers["Content-Type"] = media_type
        for delay_s in (*RETRY_DELAYS_S, None):
            try:
                response = httpx.request(
                    method, url, params=params, content=content, headers=headers, timeout=TIMEOUT_S
                )
            except httpx.TransportError as exc:
                if delay_s is None:
                    raise errors.CoordinatorUnavailable(
                        f"cannot reach the coordinator at {self.url} for checkpoints: {exc}"
                    ) from exc
                log.warning("checkpoint %s %s failed (%s); retrying", method, url, exc)
            else:
                if response.status_code != 503 or delay_s is None:
                    break
            time.sleep(delay_s)
        if response.is_error:
            raise error_from_response(response)
        return response


def encode(value: Any) -> tuple[bytes, str]:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), "application/octet-stream"
    try:
        return msgspec.json.encode(value), "application/json"
    except (TypeError, msgspec.EncodeError) as exc:
        raise errors.InvalidRequest(
            f"a checkpoint must be bytes or a JSON value; {type(value).__name__} is neither "
            f"({exc}); convert it, e.g. with pickle.dumps or to a dict"
        ) from None


def is_in_task() -> bool:
    """Is this process a task run by a dtf worker that can save checkpoints?"""
    return bool(os.environ.get(URL_ENV) and os.environ.get(TOKEN_ENV))


def current() -> TaskCheckpoints:
    return TaskCheckpoints.from_env(os.environ)


def save(value: Any, *, step: int | None = None) -> str:
    """Save ``value`` (bytes or a JSON value) as this task's latest checkpoint; its SHA-256."""
    return current().save(value, step=step)


def load(default: Any = None) -> Any:
    """This task's latest checkpoint (saved by this or an earlier attempt), or ``default``."""
    return current().load(default)


def available() -> bool:
    """Does this task have a checkpoint to resume from?"""
    return current().available()


def resumed_from() -> str | None:
    """The digest of the checkpoint this attempt started from, or None for a fresh start."""
    return current().resumed_from
