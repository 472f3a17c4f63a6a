"""No task process outlives its worker agent, even one killed with SIGKILL.

The agent starts one sidecar (``python -m dtf.worker.reaper``) in a session
of its own and keeps the write end of a pipe to the sidecar's stdin. For each
task process group it writes ``+<pgid>`` when the group starts and
``-<pgid>`` when it has ended. Only the agent holds the write end (pipes are
close-on-exec and task processes get no inherited descriptors), so the
sidecar reads end-of-file exactly when the agent exits, however it exits;
it then SIGKILLs every group still listed and exits itself. The sidecar
ignores SIGINT, SIGTERM and SIGHUP so that a signal meant for the agent's
terminal or service does not take it out first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterable

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0


class Reaper:
    """The agent's handle on the sidecar; also a ``ProcessObserver``."""

    def __init__(self) -> None:
        self.groups: set[int] = set()
        self.sidecar = _spawn_sidecar()

    def process_started(self, pgid: int) -> None:
        self.groups.add(pgid)
        self._send(f"+{pgid}\n")

    def process_ended(self, pgid: int) -> None:
        self.groups.discard(pgid)
        self._send(f"-{pgid}\n")

    def close(self) -> None:
        """Let the sidecar kill what is still listed and exit."""
        self._close_pipe()
        try:
            self.sidecar.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.error("reaper sidecar %d did not exit; killing it", self.sidecar.pid)
            self.sidecar.kill()
            self.sidecar.wait()

    def _send(self, line: str) -> None:
        try:
            self._write(line)
        except BrokenPipeError:
            logger.error(
                "reaper sidecar %d died (exit status %s); starting a new one",
                self.sidecar.pid,
                self.sidecar.poll(),
            )
            self._close_pipe()
            self.sidecar = _spawn_sidecar()
            self._write("".join(f"+{pgid}\n" for pgid in self.groups))

    def _close_pipe(self) -> None:
        assert self.sidecar.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.sidecar.stdin.close()

    def _write(self, text: str) -> None:
        assert self.sidecar.stdin is not None
        os.write(self.sidecar.stdin.fileno(), text.encode())


def _spawn_sidecar() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dtf.worker.reaper"],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )


def watch(lines: Iterable[bytes]) -> set[int]:
    """Follow ``+pgid``/``-pgid`` lines to their end; the groups left listed."""
    groups: set[int] = set()
    for line in lines:
        sign, number = line[:1], line[1:].strip()
        if not number.isdigit():
            continue
        if sign == b"+":
            groups.add(int(number))
        elif sign == b"-":
            groups.discard(int(number))
    return groups


def kill_groups(groups: Iterable[int]) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def main() -> int:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    kill_groups(watch(sys.stdin.buffer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
