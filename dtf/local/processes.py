"""Child processes of a local cluster, each in its own process group.

A child gets a session of its own so a Ctrl-C in the terminal reaches only
the parent, which then stops the children in order (workers before the
coordinator). Stopping is SIGTERM to the group, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)


@dataclass
class ManagedProcess:
    """One child process and the log file its stdout and stderr go to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def is_running(self) -> bool:
        return self.popen.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self.popen.poll()

    def terminate(self) -> None:
        """Ask the whole process group to stop (SIGTERM); returns at once."""
        if self.is_running:
            _signal_group(self.pid, signal.SIGTERM)

    def wait_or_kill(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the process to exit, then SIGKILL its group."""
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0fs; killing it", self.name, timeout_s)
            _signal_group(self.pid, signal.SIGKILL)
            return self.popen.wait(timeout=timeout_s)

    def stop(self, timeout_s: float) -> int:
        self.terminate()
        return self.wait_or_kill(timeout_s)

    def kill_tree(self) -> None:
        """SIGKILL the process, its group and every descendant, as if its machine died.

        Descendants are collected first: executors may run tasks in process groups
        of their own, which a group signal would miss.
        """
        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        _signal_group(self.pid, signal.SIGKILL)
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self.popen.wait(timeout=10)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def start_process(
    name: str, argv: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None
) -> ManagedProcess:
    """Start ``argv`` in a new session with output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    logger.info("started %s (pid %d), log %s", name, popen.pid, log_path)
    return ManagedProcess(name, popen, log_path)


def stop_all(processes: list[ManagedProcess], timeout_s: float) -> None:
    """SIGTERM every process at once, then wait for each (SIGKILL after ``timeout_s``)."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.wait_or_kill(max(0.1, deadline - time.monotonic()))


def find_free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def is_port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``port``; SO_REUSEADDR as servers set it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True
