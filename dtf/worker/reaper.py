"""No task process outlives its worker agent, even one killed with SIGKILL.

The agent puts ``DTF_AGENT_MARKER=<random>`` into the environment its task
processes inherit, and starts one sidecar (``python -m dtf.worker.reaper
MARKER AGENT_PID``) in a session of its own, holding the write end of a pipe
to the sidecar's stdin. Only the agent holds that end (pipes are
close-on-exec), so the sidecar reads end-of-file exactly when the agent
exits, however it exits. It then finds every process whose environment
carries the marker (task processes and everything they started, whatever
process group or session they moved to) and SIGKILLs each with its group.

Nothing is sent per task, so the guarantee costs a short task nothing. The
sidecar ignores SIGINT, SIGTERM and SIGHUP so that a signal meant for the
agent's terminal or service does not take it out first. A task that both
clears its environment and leaves its process group escapes; only cgroups
would catch that.
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

MARKER_ENV = "DTF_AGENT_MARKER"
STOP_TIMEOUT_S = 10.0
KILL_PASSES = 5


class Reaper:
    """The agent's handle on the sidecar.

    Creating it marks this process's environment, so it must exist before the
    first task environment is built (the agent creates it first thing).
    """

    def __init__(self) -> None:
        self.marker = secrets.token_hex(12)
        os.environ[MARKER_ENV] = self.marker
        self.sidecar = self._spawn_sidecar()

    def ensure_running(self) -> None:
        """Replace a sidecar that died, so the guarantee holds again."""
        if self.sidecar.poll() is not None:
            logger.error(
                "reaper sidecar %d died (exit status %s); starting a new one",
                self.sidecar.pid,
                self.sidecar.returncode,
            )
            self._close_pipe()
            self.sidecar = self._spawn_sidecar()

    def close(self) -> None:
        """Let the sidecar kill what is still running and exit."""
        self._close_pipe()
        try:
            self.sidecar.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.error("reaper sidecar %d did not exit; killing it", self.sidecar.pid)
            self.sidecar.kill()
            self.sidecar.wait()

    def _spawn_sidecar(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
        return subprocess.Popen(
            [sys.executable, "-m", "dtf.worker.reaper", self.marker, str(os.getpid())],
            stdin=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )

    def _close_pipe(self) -> None:
        assert self.sidecar.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.sidecar.stdin.close()


def carries_marker(environ: bytes, marker: str) -> bool:
    """Does a ``/proc/<pid>/environ`` blob hold exactly ``DTF_AGENT_MARKER=marker``?"""
    return f"{MARKER_ENV}={marker}".encode() in environ.split(b"\0")


def marked_pids(marker: str, *, exclude: set[int], proc: Path = Path("/proc")) -> Iterator[int]:
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        with contextlib.suppress(OSError):
            if carries_marker((entry / "environ").read_bytes(), marker):
                yield int(entry.name)


def kill_marked(marker: str, *, exclude: set[int]) -> int:
    """SIGKILL every marked process and its group; repeat while new ones appear."""
    killed = 0
    for _ in range(KILL_PASSES):
        found = list(marked_pids(marker, exclude=exclude))
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed += len(found)
    return killed


def main(argv: list[str]) -> int:
    marker, agent_pid = argv[1], int(argv[2])
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    while sys.stdin.buffer.read(65536):
        pass
    kill_marked(marker, exclude={os.getpid(), agent_pid})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
