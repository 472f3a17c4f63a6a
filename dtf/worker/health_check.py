"""Running a worker's health check: a shell command that must exit 0.

Like LAVA's health checks for devices, the command proves the machine can do
real work (``nvidia-smi``, a tiny matmul, opening a browser) before the
coordinator sends any. It runs in the work directory, in a process group of
its own that is killed whole on timeout, and its verdict carries the exit
status and the tail of its output so ``dtf workers`` can say why it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from dtf.protocol import HealthCheckReport

logger = logging.getLogger(__name__)

OUTPUT_TAIL_CHARS = 400


async def run_health_check(command: str, timeout_s: float, workdir: Path) -> HealthCheckReport:
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_shell(
            command,
            cwd=workdir,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:  # a report must go back, or the worker waits for work forever
        detail = f"could not start {command!r} in {workdir}: {exc}"
        return HealthCheckReport(False, detail, time.monotonic() - started)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        _kill_group(process.pid)
        await process.wait()
        return HealthCheckReport(
            False, f"timed out after {timeout_s:.0f}s: {command}", time.monotonic() - started
        )
    finally:
        if process.returncode is None:
            _kill_group(process.pid)
    return _verdict(command, process.returncode, output, time.monotonic() - started)


def _verdict(command: str, code: int | None, output: bytes, duration_s: float) -> HealthCheckReport:
    tail = output.decode(errors="replace").strip()[-OUTPUT_TAIL_CHARS:]
    if code == 0:
        return HealthCheckReport(True, tail or "exit 0", duration_s)
    status = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
    detail = f"{status}: {tail}" if tail else f"{status} ({command})"
    return HealthCheckReport(False, detail, duration_s)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
