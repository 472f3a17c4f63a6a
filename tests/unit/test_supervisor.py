"""The local worker supervisor: a dead worker is restarted after a backoff that
grows while it keeps dying quickly, and each death and restart is reported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from dtf.local.processes import ManagedProcess
from dtf.local.supervisor import RestartBackoff, WorkerSupervisor, exit_text


@dataclass
class FakeProcess:
    pid: int
    exit_code: int | None = None
    log_path: Path = Path("/logs/worker.log")

    @property
    def is_running(self) -> bool:
        return self.exit_code is None


class Fleet:
    """Worker processes by id, with a restart that starts a new fake process."""

    def __init__(self) -> None:
        self.processes: dict[str, FakeProcess] = {"w1": FakeProcess(100)}
        self.lines: list[str] = []

    def workers(self) -> dict[str, ManagedProcess]:
        return cast(dict[str, ManagedProcess], dict(self.processes))

    def restart(self, worker_id: str) -> ManagedProcess:
        process = FakeProcess(self.processes[worker_id].pid + 1)
        self.processes[worker_id] = process
        return cast(ManagedProcess, process)

    def supervisor(self, kind: str = "worker", **backoff: Any) -> WorkerSupervisor:
        return WorkerSupervisor(
            self.workers, self.restart, self.lines.append, RestartBackoff(**backoff), kind
        )


@pytest.mark.parametrize(
    ("deaths", "delay_s"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (6, 10.0), (60, 10.0)],  # doubling, capped at max_s
)
def test_backoff_doubles_with_quick_deaths_up_to_the_cap(deaths: int, delay_s: float) -> None:
    assert RestartBackoff(min_s=0.5, max_s=10.0).delay_s(deaths) == delay_s


def test_a_dead_worker_is_restarted_once_its_backoff_passed() -> None:
    fleet = Fleet()
    supervisor = fleet.supervisor(min_s=0.5)
    supervisor.check(now=0.0)
    fleet.processes["w1"].exit_code = -9
    supervisor.check(now=1.0)
    assert fleet.lines == [
        "worker w1 was killed by SIGKILL; restarting it in 0.5s (see /logs/worker.log)"
    ]
    supervisor.check(now=1.4)
    assert fleet.processes["w1"].pid == 100
    supervisor.check(now=1.5)
    assert fleet.processes["w1"].pid == 101
    assert fleet.lines[-1] == "restarted worker w1 (pid 101)"
    assert supervisor.restarts == 1


def test_reports_name_what_is_supervised() -> None:
    fleet = Fleet()
    supervisor = fleet.supervisor("coordinator", min_s=0.5)
    supervisor.check(now=0.0)
    fleet.processes["w1"].exit_code = 1
    supervisor.check(now=1.0)
    supervisor.check(now=1.5)
    assert fleet.lines == [
        "coordinator w1 exited with code 1; restarting it in 0.5s (see /logs/worker.log)",
        "restarted coordinator w1 (pid 101)",
    ]


def test_quick_deaths_wait_longer_and_a_stable_run_starts_the_count_again() -> None:
    fleet = Fleet()
    supervisor = fleet.supervisor(min_s=1.0, stable_s=60.0)
    supervisor.check(now=0.0)
    delays = []
    for died_at in (10.0, 20.0, 200.0):
        fleet.processes["w1"].exit_code = 1
        supervisor.check(now=died_at)
        watched = supervisor.watched["w1"]
        assert watched.restart_at is not None
        delays.append(watched.restart_at - died_at)
        supervisor.check(now=watched.restart_at)
    assert delays == [1.0, 2.0, 1.0]


@pytest.mark.parametrize(
    ("code", "text"),
    [(-9, "was killed by SIGKILL"), (3, "exited with code 3"), (-200, "was killed by signal 200")],
)
def test_exit_text(code: int, text: str) -> None:
    assert exit_text(code) == text
