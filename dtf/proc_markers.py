"""Find and SIGKILL the processes whose environment carries a marker: the sidecar that
kills what a local cluster's supervisor leaves behind (``dtf.local.orphan_guard``) and
what a worker agent's tasks leave behind (``dtf.worker.reaper``), started with
``start_sidecar`` and ``wait_ready``, stopped with ``stop_sidecar``.

Standard library only: the sidecar runs ``run_sidecar`` through ``python -c`` and
imports nothing of dtf but this module, so its start costs little and cannot fail on
anything else dtf needs. Linux only: environments are read from
``/proc/<pid>/environ`` and processes are signalled through pidfds (Linux 5.3).

A pid read from ``/proc`` may belong to another process by the time it is signalled
(the marked one exited, its pid was reused). So each is opened as a pidfd first, which
names that one process for good, and its environment is read again: only while the
pidfd's process is still alive does its pid name it, so a marker read then is its own.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

SIDECAR_CODE = (
    "import sys; from dtf.proc_markers import run_sidecar; sys.exit(run_sidecar(sys.argv))"
)
PROC = Path("/proc")
KILL_PASSES = 5
READY = b"R"
NO_GROUP = 0  # as ``spared_group``: spare no process group (no group has id 0)


def carries_marker(environ: bytes, variable: str, marker: str) -> bool:
    """Does a ``/proc/<pid>/environ`` blob hold exactly ``variable=marker``?"""
    return f"{variable}={marker}".encode() in environ.split(b"\0")


def marked_pids(variable: str, marker: str, *, exclude: set[int], proc: Path = PROC) -> list[int]:
    """The pids whose environment carried the marker when ``proc`` was read."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        with contextlib.suppress(OSError):
            if carries_marker((entry / "environ").read_bytes(), variable, marker):
                found.append(int(entry.name))
    return found


def kill_if_marked(pid: int, variable: str, marker: str, *, spared_group: int) -> bool:
    """SIGKILL the process ``pid`` names now, and its process group unless that is
    ``spared_group``, if its environment carries the marker. Returns whether it did."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if not carries_marker((PROC / str(pid) / "environ").read_bytes(), variable, marker):
            return False
        # Stopped, it can neither exit (freeing its pid) nor move to another group
        # between reading its group and signalling that group.
        signal.pidfd_send_signal(pidfd, signal.SIGSTOP)
        group = os.getpgid(pid)
        signal.pidfd_send_signal(pidfd, 0)  # still there: the group read was its own
        if group != spared_group:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except OSError:  # it exited meanwhile, or is not ours to signal
        return False
    finally:
        os.close(pidfd)


def kill_marked(variable: str, marker: str, *, exclude: set[int], spared_group: int) -> int:
    """SIGKILL every marked process and its group (see ``kill_if_marked``); look again
    while new ones appear. Returns how many were killed."""
    killed: set[int] = set()
    for _ in range(KILL_PASSES):
        found = marked_pids(variable, marker, exclude=exclude)
        if not found:
            break
        for pid in found:
            if kill_if_marked(pid, variable, marker, spared_group=spared_group):
                killed.add(pid)
    return len(killed)


def run_sidecar(argv: list[str]) -> int:
    """``argv[1:]``: NAME VARIABLE MARKER WATCHED_PID SPARED_GROUP. Writes ``READY`` to
    stdout once armed, reads stdin until end of file (when the watched process, the
    only holder of its write end, exits), then kills every marked process."""
    name, variable, marker, watched_pid, spared_group = argv[1:6]
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    os.write(sys.stdout.fileno(), READY)
    while sys.stdin.buffer.read(65536):
        pass
    exclude = {os.getpid(), int(watched_pid)}
    killed = kill_marked(variable, marker, exclude=exclude, spared_group=int(spared_group))
    if killed:
        print(f"{name}: killed {killed} processes left by pid {watched_pid}", file=sys.stderr)
    return 0


def start_sidecar(
    python: str, name: str, variable: str, marker: str, *, spared_group: int
) -> subprocess.Popen[bytes]:
    """Start ``run_sidecar`` watching this process, in a session of its own, this process
    holding the only write end of its stdin; ``wait_ready`` next."""
    argv = [name, variable, marker, str(os.getpid()), str(spared_group)]
    return subprocess.Popen(
        [python, "-c", SIDECAR_CODE, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={key: value for key, value in os.environ.items() if key != variable},
        start_new_session=True,
    )


def wait_ready(sidecar: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Did the sidecar report within ``timeout_s`` that it is armed? Closes its stdout."""
    assert sidecar.stdout is not None
    with sidecar.stdout as stdout:
        readable, _, _ = select.select([stdout], [], [], timeout_s)
        return bool(readable) and os.read(stdout.fileno(), len(READY)) == READY


def stop_sidecar(sidecar: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Close the sidecar's stdin, so that it kills every marked process and exits, and
    wait for it; SIGKILL it after ``timeout_s``. Returns whether it exited in time."""
    assert sidecar.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        sidecar.stdin.close()
    try:
        sidecar.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        sidecar.kill()
        sidecar.wait()
        return False
    return True
