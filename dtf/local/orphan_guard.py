"""No child of ``dtf up`` or ``dtf cluster local`` outlives it, even one SIGKILLed.

How this works (``dtf.worker.reaper`` one level up): the supervising process starts
one sidecar (``main`` here, given MARKER PID PGID) in a session of its own
and holds the only write end of a pipe to the sidecar's stdin (pipes are
close-on-exec). Every child it starts gets ``DTF_LOCAL_MARKER=<marker>`` in its
environment, and what they start inherits it: etcd members, coordinators, workers,
their reaper sidecars and task processes. When the supervisor exits, however it
exits, the sidecar reads end-of-file and SIGKILLs every process carrying the marker,
with its process group. After a clean stop it finds none.

Not PR_SET_PDEATHSIG: that signal comes when the *thread* that started a child ends,
and supervisor threads restart children; it must be set between fork and exec, with
other threads running; and etcd members are started by ``dtf.testing.etcd``.
SIGKILL, not SIGTERM: with the supervisor gone nobody would escalate a stop that
hangs, and every child already survives being killed (journal and etcd are fsync'd
before a write is acknowledged; a worker's reaper kills its tasks). The sidecar
ignores SIGINT, SIGTERM and SIGHUP, so a signal meant for the supervisor's terminal
does not take it out first. Linux only: it reads ``/proc/<pid>/environ``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

MARKER_ENV = "DTF_LOCAL_MARKER"
# Not ``-m dtf.local.orphan_guard``: the ``dtf.local`` package imports this module, which
# runpy would then run a second time as ``__main__`` (and warn about it on stderr).
SIDECAR_CODE = "import sys; from dtf.local.orphan_guard import main; sys.exit(main(sys.argv))"
CLOSE_TIMEOUT_S = 10.0
KILL_PASSES = 5


class OrphanGuard:
    """``guard = OrphanGuard()``; start children with ``guard.environment()`` in their
    environment; ``guard.close()`` once they are stopped."""

    def __init__(self) -> None:
        self.marker = secrets.token_hex(12)
        self.sidecar = subprocess.Popen(
            [sys.executable, "-c", SIDECAR_CODE, self.marker, str(os.getpid()), str(os.getpgrp())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env={name: value for name, value in os.environ.items() if name != MARKER_ENV},
            start_new_session=True,
        )

    def environment(self) -> dict[str, str]:
        """The variable a child's environment needs for the guard to find it."""
        return {MARKER_ENV: self.marker}

    @contextlib.contextmanager
    def marking_this_process(self) -> Iterator[None]:
        """Put the marker into this process's environment for children started by code
        that builds their environment from it (``EtcdCluster``); taken out afterwards."""
        previous = os.environ.get(MARKER_ENV)
        os.environ[MARKER_ENV] = self.marker
        try:
            yield
        finally:
            if previous is None:
                del os.environ[MARKER_ENV]
            else:
                os.environ[MARKER_ENV] = previous

    def close(self) -> None:
        """Let the sidecar kill whatever marked process is left, and wait for it."""
        assert self.sidecar.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.sidecar.stdin.close()
        try:
            self.sidecar.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.error("orphan guard %d did not exit; killing it", self.sidecar.pid)
            self.sidecar.kill()
            self.sidecar.wait()


def carries_marker(environ: bytes, marker: str) -> bool:
    """Does a ``/proc/<pid>/environ`` blob hold exactly ``DTF_LOCAL_MARKER=marker``?"""
    return f"{MARKER_ENV}={marker}".encode() in environ.split(b"\0")


def marked_pids(marker: str, *, exclude: set[int], proc: Path = Path("/proc")) -> list[int]:
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        with contextlib.suppress(OSError):
            if carries_marker((entry / "environ").read_bytes(), marker):
                found.append(int(entry.name))
    return found


def kill_marked(marker: str, *, exclude: set[int], spared_group: int) -> int:
    """SIGKILL every marked process and its group (unless that is ``spared_group``, the
    supervisor's, which a terminal or test runner may share); look again while new ones
    appear. Returns how many were found."""
    killed: set[int] = set()
    for _ in range(KILL_PASSES):
        found = marked_pids(marker, exclude=exclude)
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if (group := os.getpgid(pid)) != spared_group:
                    os.killpg(group, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed.update(found)
    return len(killed)


def main(argv: list[str]) -> int:
    marker, supervisor_pid, spared_group = argv[1], int(argv[2]), int(argv[3])
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    while sys.stdin.buffer.read(65536):
        pass
    killed = kill_marked(marker, exclude={os.getpid(), supervisor_pid}, spared_group=spared_group)
    if killed:
        print(
            f"orphan guard: killed {killed} processes left by pid {supervisor_pid}", file=sys.stderr
        )
    return 0
