"""The reaper sidecar kills task process groups when their agent dies."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from dtf.worker.reaper import Reaper

pytestmark = pytest.mark.integration

# A stand-in agent: runs one command task through the real executor, with the
# real reaper as its process observer, and never finishes on its own.
AGENT_SCRIPT = """
import asyncio, sys
from pathlib import Path
import msgspec
from dtf.core.model import TaskSpec
from dtf.protocol import Assign
from dtf.worker.executors import execute
from dtf.worker.reaper import Reaper

spec = msgspec.convert(
    {"type": "command", "config": {"command": "sleep 60 & sleep 60"}}, TaskSpec
)
assign = Assign("orphan-test", 1, 1, spec, lease_timeout_s=10.0)
reaper = Reaper()
asyncio.run(execute(assign, workdir=Path(sys.argv[1]), cancelled=asyncio.Event(), observer=reaper))
"""


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


def sleep_pids(parent: psutil.Process) -> list[int]:
    try:
        children = parent.children(recursive=True)
        return [child.pid for child in children if child.name() == "sleep"]
    except psutil.NoSuchProcess:
        return []


def ignores_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def test_task_processes_die_with_a_sigkilled_agent(tmp_path: Path) -> None:
    agent = subprocess.Popen([sys.executable, "-c", AGENT_SCRIPT, str(tmp_path)])
    sleeps: list[int] = []
    try:
        parent = psutil.Process(agent.pid)
        wait_for(lambda: len(sleep_pids(parent)) == 2, "both sleeps of the task to start")
        sleeps = sleep_pids(parent)
        agent.kill()
        agent.wait(timeout=10)
        wait_for(lambda: all(map(is_gone, sleeps)), f"the task's sleeps {sleeps} to be killed")
    finally:
        agent.kill()
        agent.wait(timeout=10)
        for pid in sleeps:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_sidecar_ignores_termination_signals_and_kills_on_close() -> None:
    task = subprocess.Popen(["sleep", "60"], start_new_session=True)
    reaper = Reaper()
    try:
        wait_for(lambda: ignores_sigterm(reaper.sidecar.pid), "the sidecar to ignore SIGTERM")
        reaper.process_started(task.pid)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(reaper.sidecar.pid, signum)
        reaper.close()
        assert reaper.sidecar.returncode == 0
        assert task.wait(timeout=10) == -signal.SIGKILL
    finally:
        task.kill()
        task.wait(timeout=10)
        reaper.sidecar.kill()
        reaper.sidecar.wait(timeout=10)


def test_ended_groups_are_left_alone() -> None:
    task = subprocess.Popen(["sleep", "60"], start_new_session=True)
    reaper = Reaper()
    try:
        reaper.process_started(task.pid)
        reaper.process_ended(task.pid)
        reaper.close()
        assert reaper.sidecar.returncode == 0
        assert task.poll() is None
    finally:
        task.kill()
        task.wait(timeout=10)


def test_a_dead_sidecar_is_replaced_and_told_the_running_groups() -> None:
    tasks = [subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(2)]
    reaper = Reaper()
    first = reaper.sidecar
    try:
        reaper.process_started(tasks[0].pid)
        first.kill()
        first.wait(timeout=10)
        reaper.process_started(tasks[1].pid)
        assert reaper.sidecar is not first
        reaper.close()
        assert [task.wait(timeout=10) for task in tasks] == [-signal.SIGKILL] * 2
    finally:
        for process in [*tasks, reaper.sidecar]:
            process.kill()
            process.wait(timeout=10)
