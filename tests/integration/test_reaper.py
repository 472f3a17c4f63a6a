"""The reaper sidecar kills a dead agent's task processes, wherever they went."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import psutil
import pytest

from dtf.worker.reaper import MARKER_ENV, Reaper, ReaperError

pytestmark = pytest.mark.integration

# A stand-in agent: runs one command task through the real executor with the
# real reaper started first, and never finishes on its own. One of the task's
# sleeps moves to a session of its own, out of the task's process group.
AGENT_SCRIPT = """
import asyncio, sys
from pathlib import Path
import msgspec
from dtf.core.model import TaskSpec
from dtf.protocol import Assign
from dtf.worker.executors import execute
from dtf.worker.reaper import Reaper

reaper = Reaper()
spec = msgspec.convert(
    {"type": "command", "config": {"command": "sleep 60 & setsid sleep 61 & sleep 62"}}, TaskSpec
)
assign = Assign("orphan-test", 1, 1, spec, lease_timeout_s=10.0)
asyncio.run(execute(assign, workdir=Path(sys.argv[1]), cancelled=asyncio.Event()))
"""


@pytest.fixture(autouse=True)
def environment_restored() -> Iterator[None]:
    """A ``Reaper`` marks this process's environment; later tests' children must not be."""
    with mock.patch.dict(os.environ):
        yield


def wait_for(condition: Callable[[], bool], what: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within_s:g}s waiting for {what}")
        time.sleep(0.02)


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def task_sleeps(tmp_path: Path) -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "sleep" and p.info["cmdline"][1:] in (["60"], ["61"], ["62"])
    ]


def ignores_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def test_task_processes_die_with_a_sigkilled_agent(tmp_path: Path) -> None:
    agent = subprocess.Popen([sys.executable, "-c", AGENT_SCRIPT, str(tmp_path)])
    sleeps: list[int] = []
    try:
        wait_for(lambda: len(task_sleeps(tmp_path)) == 3, "the task's three sleeps to start")
        sleeps = task_sleeps(tmp_path)
        agent.kill()
        agent.wait(timeout=10)
        wait_for(lambda: all(map(is_gone, sleeps)), f"the task's sleeps {sleeps} to be killed")
    finally:
        agent.kill()
        agent.wait(timeout=10)
        for pid in sleeps:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def marked_sleep(marker: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, MARKER_ENV: marker}
    return subprocess.Popen(["sleep", "60"], start_new_session=True, env=env)


def test_sidecar_ignores_termination_signals_and_kills_marked_processes_on_close() -> None:
    reaper = Reaper()
    task = marked_sleep(reaper.marker)
    bystander = marked_sleep("another-agent")
    try:
        wait_for(lambda: ignores_sigterm(reaper.sidecar.pid), "the sidecar to ignore SIGTERM")
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(reaper.sidecar.pid, signum)
        reaper.close()
        assert reaper.sidecar.returncode == 0
        assert task.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None
    finally:
        for process in (task, bystander):
            process.kill()
            process.wait(timeout=10)


def test_a_dead_sidecar_is_replaced() -> None:
    reaper = Reaper()
    first = reaper.sidecar
    task = marked_sleep(reaper.marker)
    try:
        first.kill()
        first.wait(timeout=10)
        reaper.ensure_running()
        assert reaper.sidecar is not first
        reaper.close()
        assert task.wait(timeout=10) == -signal.SIGKILL
    finally:
        for process in (task, reaper.sidecar):
            process.kill()
            process.wait(timeout=10)


def test_a_sidecar_that_cannot_start_refuses_the_worker(tmp_path: Path) -> None:
    """Its python cannot import dtf (no site-packages, no current directory on its path)."""
    python = tmp_path / "python-without-dtf"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S -P "$@"\n')
    python.chmod(0o755)
    before = os.environ.get(MARKER_ENV)
    with pytest.raises(ReaperError, match=r"reaper sidecar .* did not report ready"):
        Reaper(str(python))
    assert os.environ.get(MARKER_ENV) == before  # nothing marked for an unguarded task
