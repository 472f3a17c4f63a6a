"""Run one task process in its own process group and say how it ended.

The process starts in a new session, so its pid is the id of a group that
holds everything it spawns; timeouts, cancellation and cleanup signal that
whole group. Output is kept as the last few KiB of each stream, read as it
arrives, so memory stays bounded however much a task prints. When the leader
exits, whatever it left running in its group is killed.

A program whose file is known (a remembered PATH search, or a path) and that
runs in the worker's directory starts with ``os.posix_spawn``: it does what
``subprocess.Popen`` does here (a new session, stdin from /dev/null, the
signals Python ignores back to their defaults, no descriptor inherited but
the pipes) for about a quarter less of the worker's CPU per spawn. (glibc's
posix_spawn leaves its own two internal signals, 32 and 33, ignored in the
child; glibc programs install their handlers for them at start.) Python opens
every descriptor non-inheritable, and ``keep_descriptors_private`` marks the
ones the worker itself inherited, so a task gets none but its own three.
Anything else (a ``cwd``, a name exec must search for) starts with ``Popen``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dtf.worker.executors.lookup import ProgramLookup

logger = logging.getLogger(__name__)

TAIL_BYTES = 4096
KILL_GRACE_S = 2.0
PIPE_DRAIN_S = 1.0

_PROGRAMS = ProgramLookup(time.monotonic)
# Python ignores these; subprocess restores their defaults in a child, and so do we.
_RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


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

    def __init__(self, loop: asyncio.AbstractEventLoop, child: _Child) -> None:
        self.loop, self.child = loop, child
        self.streams = {"stdout": child.stdout, "stderr": child.stderr}
        self.tails = {name: TailBuffer() for name in self.streams}
        self.open_streams = set(self.streams)
        self.returncode: int | None = None
        self.exit_waiters: list[asyncio.Future[None]] = []
        self.pipe_waiters: list[asyncio.Future[None]] = []
        for name, fd in self.streams.items():
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._read, name)
        self._watch_exit()

    @property
    def has_exited(self) -> bool:
        return self.returncode is not None

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
            data = os.read(self.streams[name], 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.tails[name].write(data)
        else:
            self._close_stream(name)

    def _close_stream(self, name: str) -> None:
        self.loop.remove_reader(self.streams[name])
        os.close(self.streams[name])
        self.open_streams.discard(name)
        if not self.open_streams:
            _resolve(self.pipe_waiters)

    def _watch_exit(self) -> None:
        try:
            pidfd = os.pidfd_open(self.child.pid)
        except (AttributeError, OSError):
            # No pidfd (not Linux, or older than 5.3): wait in a worker thread.
            waited = self.loop.run_in_executor(None, self.child.wait)
            waited.add_done_callback(lambda done: self._exited(done.result()))
            return
        self.loop.add_reader(pidfd, self._pidfd_ready, pidfd)

    def _pidfd_ready(self, pidfd: int) -> None:
        self.loop.remove_reader(pidfd)
        os.close(pidfd)
        self._exited(self.child.wait())

    def _exited(self, returncode: int) -> None:
        self.returncode = returncode
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
        child = _spawn(argv, env, cwd)
    except (OSError, ValueError) as exc:
        error = _spawn_error(argv, cwd, exc)
        return ProcessResult(None, time.monotonic() - started, spawn_error=error)
    process = _TaskProcess(asyncio.get_running_loop(), child)
    stopped = await _supervise(process, timeout_s, cancelled, observer)
    return ProcessResult(
        returncode=process.returncode,
        duration_s=time.monotonic() - started,
        stdout_tail=process.tails["stdout"].text(),
        stderr_tail=process.tails["stderr"].text(),
        stopped=stopped,
    )


@dataclass(frozen=True)
class _Child:
    """A started task process: its pid, the read ends of its output pipes, and
    ``wait()``, which reaps it and gives its return code (-N for signal N)."""

    pid: int
    stdout: int
    stderr: int
    wait: Callable[[], int]


def _spawn(argv: Sequence[str], env: Mapping[str, str], cwd: Path | str | None) -> _Child:
    """Start ``argv`` in a session of its own, from the file its PATH search last
    found (searching again if that file no longer starts)."""
    executable = _PROGRAMS.executable(argv[0], env) if argv else None
    try:
        return _start(argv, env, cwd, executable)
    except OSError:
        if executable is None:
            raise
        _PROGRAMS.forget(argv[0], env)
        return _start(argv, env, cwd, None)


def _start(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path | str | None, executable: str | None
) -> _Child:
    stdout, stdout_end, stderr, stderr_end = _output_pipes()
    try:
        if cwd is None and argv and (executable or os.sep in argv[0]):
            pid = _posix_spawn(executable or argv[0], argv, env, stdout_end, stderr_end)
            wait: Callable[[], int] = functools.partial(_reap, pid)
        else:
            popen = _popen(argv, env, cwd, executable, stdout_end, stderr_end)
            pid, wait = popen.pid, popen.wait
    except BaseException:
        for fd in (stdout, stderr):
            os.close(fd)
        raise
    finally:
        for fd in (stdout_end, stderr_end):
            os.close(fd)
    return _Child(pid, stdout, stderr, wait)


def _output_pipes() -> tuple[int, int, int, int]:
    """Two pipes (read end, write end), both closed again if the second fails."""
    stdout, stdout_end = os.pipe()
    try:
        stderr, stderr_end = os.pipe()
    except BaseException:
        os.close(stdout)
        os.close(stdout_end)
        raise
    return stdout, stdout_end, stderr, stderr_end


def _posix_spawn(
    path: str, argv: Sequence[str], env: Mapping[str, str], stdout: int, stderr: int
) -> int:
    return os.posix_spawn(
        path,
        list(argv),
        env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
            (os.POSIX_SPAWN_DUP2, stdout, 1),
            (os.POSIX_SPAWN_DUP2, stderr, 2),
        ],
        setsid=True,
        setsigdef=_RESTORED_SIGNALS,
    )


def _popen(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | str | None,
    executable: str | None,
    stdout: int,
    stderr: int,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        executable=executable,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )


def keep_descriptors_private() -> None:
    """Mark every descriptor above stderr close-on-exec: call once at start-up,
    before any task starts. What started the worker may have left some open."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return  # no /proc: nothing to enumerate them by
    for name in names:
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own descriptor, now closed
                os.set_inheritable(fd, False)


def _reap(pid: int) -> int:
    try:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    except ChildProcessError:
        # Reaped already (SIGCHLD ignored by whoever embeds us): what subprocess reports.
        return 0


async def _supervise(
    process: _TaskProcess,
    timeout_s: float,
    cancelled: asyncio.Event | None,
    observer: ProcessObserver | None,
) -> StopReason | None:
    """Wait for the group leader to exit, stopping it on timeout or
    cancellation; then kill what is left of its group. Why it was stopped."""
    pgid = process.child.pid
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
