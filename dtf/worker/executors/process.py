"""Run one task process in its own process group and say how it ended.

The process starts in a new session, so its pid is the id of a group that
holds everything it spawns; timeouts, cancellation and cleanup signal that
whole group. Output is kept as the last few KiB of each stream, read as it
arrives, so memory stays bounded however much a task prints. When the leader
exits, whatever it left running in its group is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dtf.worker.executors.lookup import ProgramLookup

logger = logging.getLogger(__name__)

TAIL_BYTES = 4096
KILL_GRACE_S = 2.0
PIPE_DRAIN_S = 1.0

Popen = subprocess.Popen[bytes]
_PROGRAMS = ProgramLookup(time.monotonic)


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


class _TaskProcess:
    """A started task process watched by the event loop without a transport:
    its pipes and, where the kernel has pidfds, its exit are plain readers,
    which costs a short task markedly less than asyncio's subprocess layer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes]) -> None:
        self.loop, self.popen = loop, popen
        assert popen.stdout is not None and popen.stderr is not None
        self.streams = {"stdout": popen.stdout, "stderr": popen.stderr}
        self.tails = {name: TailBuffer() for name in self.streams}
        self.open_streams = set(self.streams)
        self.has_exited = False
        self.exit_waiters: list[asyncio.Future[None]] = []
        self.pipe_waiters: list[asyncio.Future[None]] = []
        for name, stream in self.streams.items():
            os.set_blocking(stream.fileno(), False)
            loop.add_reader(stream.fileno(), self._read, name)
        self._watch_exit()

    def when_exited(self) -> asyncio.Future[None]:
        return self._waiter(self.exit_waiters, self.has_exited)

    def when_pipes_closed(self) -> asyncio.Future[None]:
        return self._waiter(self.pipe_waiters, not self.open_streams)

    def close(self) -> None:
        """Stop reading output still open; what is left in a pipe is dropped."""
        for name in list(self.open_streams):
            self._close_stream(name)

    def _read(self, name: str) -> None:
        try:
            data = os.read(self.streams[name].fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.tails[name].write(data)
        else:
            self._close_stream(name)

    def _close_stream(self, name: str) -> None:
        self.loop.remove_reader(self.streams[name].fileno())
        self.streams[name].close()
        self.open_streams.discard(name)
        if not self.open_streams:
            _resolve(self.pipe_waiters)

    def _watch_exit(self) -> None:
        try:
            pidfd = os.pidfd_open(self.popen.pid)
        except (AttributeError, OSError):
            # No pidfd (not Linux, or older than 5.3): wait in a worker thread.
            waited = self.loop.run_in_executor(None, self.popen.wait)
            waited.add_done_callback(lambda _: self._exited())
            return
        self.loop.add_reader(pidfd, self._pidfd_ready, pidfd)

    def _pidfd_ready(self, pidfd: int) -> None:
        self.loop.remove_reader(pidfd)
        os.close(pidfd)
        self.popen.wait()
        self._exited()

    def _exited(self) -> None:
        self.has_exited = True
        _resolve(self.exit_waiters)

    def _waiter(self, waiters: list[asyncio.Future[None]], is_done: bool) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        if is_done:
            future.set_result(None)
        else:
            waiters.append(future)
        return future


class _Stopper:
    """Stops a process group once: SIGTERM now, SIGKILL after a grace."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pgid: int) -> None:
        self.loop, self.pgid = loop, pgid
        self.reason: StopReason | None = None
        self.kill_timer: asyncio.TimerHandle | None = None

    def stop(self, reason: StopReason) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        _kill_group(self.pgid, signal.SIGTERM)
        self.kill_timer = self.loop.call_later(KILL_GRACE_S, _kill_group, self.pgid, signal.SIGKILL)

    async def stop_when_set(self, cancelled: asyncio.Event) -> None:
        await cancelled.wait()
        self.stop(StopReason.CANCELLED)

    def cancel(self) -> None:
        """Cancel a pending SIGKILL; the caller kills the group itself."""
        if self.kill_timer is not None:
            self.kill_timer.cancel()


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | str | None,
    timeout_s: float,
    cancelled: asyncio.Event | None = None,
    observer: ProcessObserver | None = None,
) -> ProcessResult:
    """Run ``argv`` to completion, timeout or cancellation (setting ``cancelled``
    or cancelling the calling task); never raises for a process that fails to
    start (``spawn_error`` says why)."""
    started = time.monotonic()
    try:
        popen = _spawn(argv, env, cwd)
    except (OSError, ValueError) as exc:
        error = _spawn_error(argv, cwd, exc)
        return ProcessResult(None, time.monotonic() - started, spawn_error=error)
    process = _TaskProcess(asyncio.get_running_loop(), popen)
    stopped = await _supervise(process, timeout_s, cancelled, observer)
    return ProcessResult(
        returncode=popen.returncode,
        duration_s=time.monotonic() - started,
        stdout_tail=process.tails["stdout"].text(),
        stderr_tail=process.tails["stderr"].text(),
        stopped=stopped,
    )


def _spawn(argv: Sequence[str], env: Mapping[str, str], cwd: Path | str | None) -> Popen:
    """Start ``argv`` in a session of its own, from the file its PATH search last
    found (searching again if that file no longer starts)."""
    executable = _PROGRAMS.executable(argv[0], env) if argv else None
    try:
        return _popen(argv, env, cwd, executable)
    except OSError:
        if executable is None:
            raise
        _PROGRAMS.forget(argv[0], env)
        return _popen(argv, env, cwd, None)


def _popen(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path | str | None, executable: str | None
) -> Popen:
    return subprocess.Popen(
        argv,
        executable=executable,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )


async def _supervise(
    process: _TaskProcess,
    timeout_s: float,
    cancelled: asyncio.Event | None,
    observer: ProcessObserver | None,
) -> StopReason | None:
    """Wait for the group leader to exit, stopping it on timeout or
    cancellation; then kill what is left of its group. Why it was stopped."""
    pgid = process.popen.pid
    stopper = _Stopper(process.loop, pgid)
    timeout = process.loop.call_later(timeout_s, stopper.stop, StopReason.TIMEOUT)
    watcher = None if cancelled is None else asyncio.create_task(stopper.stop_when_set(cancelled))
    try:
        if observer is not None:
            observer.process_started(pgid)
        await process.when_exited()
    except asyncio.CancelledError:
        stopper.stop(StopReason.CANCELLED)
        await process.when_exited()
        raise
    finally:
        timeout.cancel()
        stopper.cancel()
        if watcher is not None:
            watcher.cancel()
        _kill_group(pgid, signal.SIGKILL)
        if observer is not None:
            observer.process_ended(pgid)
        await _drain(process)
        process.close()
    return stopper.reason


async def _drain(process: _TaskProcess) -> None:
    # A process that left the group (setsid) may still hold the pipes open.
    closed = process.when_pipes_closed()
    if closed.done():
        return
    give_up = process.loop.call_later(PIPE_DRAIN_S, _stop_draining, closed)
    await closed
    give_up.cancel()


def _stop_draining(closed: asyncio.Future[None]) -> None:
    if not closed.done():
        logger.warning("task output still open after its process group ended; not waiting")
        closed.set_result(None)


def _resolve(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()


def _kill_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _spawn_error(argv: Sequence[str], cwd: Path | str | None, exc: Exception) -> str:
    if cwd is not None and not Path(cwd).is_dir():
        return f"working directory {str(cwd)!r} does not exist; create it or fix 'cwd'"
    return f"cannot start {argv[0]!r}: {getattr(exc, 'strerror', None) or exc}"
