"""Processes the benchmarks start: each in its own process group, always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

STOP_GRACE_S = 10.0


class BenchError(Exception):
    """A benchmark could not run; the message says what to look at."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running(
    command: Sequence[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` with output to ``log_path``; stop its whole process
    group on exit: SIGTERM, then SIGKILL after ``STOP_GRACE_S``."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_until(
    is_done: Callable[[], bool],
    *,
    timeout_s: float,
    interval_s: float,
    what: str,
    processes: Sequence[tuple[subprocess.Popen[bytes], Path]] = (),
) -> None:
    """Poll ``is_done`` until true; fail after ``timeout_s`` or as soon as one
    of ``processes`` exits, quoting the end of its log."""
    deadline = time.monotonic() + timeout_s
    while not is_done():
        for process, log_path in processes:
            if process.poll() is not None:
                raise BenchError(
                    f"{process.args!r} exited with {process.returncode} "
                    f"while waiting for {what}; its log ends:\n{log_tail(log_path)}"
                )
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def log_tail(log_path: Path, lines: int = 20) -> str:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])
