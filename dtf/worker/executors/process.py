"""Run one task process in its own process group and say how it ended.

The process starts in a new session, so its pid is the id of a group that
holds everything it spawns; timeouts, cancellation and cleanup signal that
whole group. Output is kept as the last few KiB of each stream, received
through the subprocess protocol as it arrives, so memory stays bounded
however much a task prints. When the leader exits, whatever it left running
in its group is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

TAIL_BYTES = 4096
KILL_GRACE_S = 2.0
PIPE_DRAIN_S = 1.0


class ProcessObserver(Protocol):
    """Told about each task process group as it starts and after it ends."""

    def process_started(self, pgid: int) -> None: ...

    def process_ended(self, pgid: int) -> None: ...


class StopReason(enum.Enum):
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ProcessResult:
    returncode: int | None
    duration_s: float
    stdout_tail: str = ""
    stderr_tail: str = ""
    stopped: StopReason | None = None
    spawn_error: str | None = None

    @property
    def exit_code(self) -> int | None:
        return self.returncode if self.returncode is not None and self.returncode >= 0 else None

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None


class TailBuffer:
    """Keeps the last ``limit`` bytes written to it."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.data += chunk[-self.limit :]
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class _TaskProtocol(asyncio.SubprocessProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.tails = {1: TailBuffer(), 2: TailBuffer()}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipes_closed: asyncio.Future[None] = loop.create_future()
        self.open_pipes = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.tails[fd].write(data if isinstance(data, bytes) else data.encode())

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.open_pipes.discard(fd)
        if not self.open_pipes and not self.pipes_closed.done():
            self.pipes_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | str | None,
    timeout_s: float,
    cancelled: asyncio.Event,
    observer: ProcessObserver | None = None,
) -> ProcessResult:
    """Run ``argv`` to completion, timeout or cancellation; never raises for
    a process that fails to start (``spawn_error`` says why)."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _TaskProtocol(loop),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        return ProcessResult(
            None, time.monotonic() - started, spawn_error=_spawn_error(argv, cwd, exc)
        )
    pgid = transport.get_pid()
    if observer is not None:
        observer.process_started(pgid)
    try:
        stopped = await _wait(protocol, timeout_s, cancelled)
        if stopped is not None:
            await _terminate(pgid, protocol)
    except asyncio.CancelledError:
        await asyncio.shield(_terminate(pgid, protocol))
        raise
    finally:
        _kill_group(pgid, signal.SIGKILL)
        if observer is not None:
            observer.process_ended(pgid)
        await _drain(protocol)
        transport.close()
    return ProcessResult(
        returncode=transport.get_returncode(),
        duration_s=time.monotonic() - started,
        stdout_tail=protocol.tails[1].text(),
        stderr_tail=protocol.tails[2].text(),
        stopped=stopped,
    )


async def _wait(
    protocol: _TaskProtocol, timeout_s: float, cancelled: asyncio.Event
) -> StopReason | None:
    if cancelled.is_set():
        return StopReason.CANCELLED
    cancel_wait = asyncio.ensure_future(cancelled.wait())
    try:
        done, _ = await asyncio.wait(
            (protocol.exited, cancel_wait), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        cancel_wait.cancel()
    if protocol.exited in done:
        return None
    return StopReason.CANCELLED if cancel_wait in done else StopReason.TIMEOUT


async def _terminate(pgid: int, protocol: _TaskProtocol) -> None:
    """SIGTERM the group, then SIGKILL it if the leader has not exited after a grace."""
    _kill_group(pgid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(protocol.exited), KILL_GRACE_S)
    except TimeoutError:
        _kill_group(pgid, signal.SIGKILL)
        await protocol.exited


async def _drain(protocol: _TaskProtocol) -> None:
    # A process that left the group (setsid) may still hold the pipes open.
    try:
        await asyncio.wait_for(asyncio.shield(protocol.pipes_closed), PIPE_DRAIN_S)
    except TimeoutError:
        logger.warning("task output still open after its process group ended; not waiting")


def _kill_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _spawn_error(argv: Sequence[str], cwd: Path | str | None, exc: OSError) -> str:
    if cwd is not None and not Path(cwd).is_dir():
        return f"working directory {str(cwd)!r} does not exist; create it or fix 'cwd'"
    return f"cannot start {argv[0]!r}: {exc.strerror or exc}"
