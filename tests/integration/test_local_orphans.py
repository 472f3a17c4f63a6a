"""Nothing a local cluster started outlives its supervising process, even one SIGKILLed:
the orphan guard alone, then a whole ``dtf up`` with a task running. The guard's
sidecar must be running before any child starts, and kills no process it has not
checked (through a pidfd) to carry the marker."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from dtf.client import Client
from dtf.errors import DtfError
from dtf.local import ClusterError, ClusterSettings, LocalCluster
from dtf.local.orphan_guard import MARKER_ENV, OrphanGuard
from dtf.local.processes import find_free_port
from dtf.proc_markers import NO_GROUP, carries_marker, kill_if_marked, marked_pids
from dtf.testing.etcd import EtcdCluster, require_etcd
from dtf.testing.waiting import wait_for

pytestmark = pytest.mark.integration

GONE_WITHIN_S = 30.0
START_TIMEOUT_S = 90.0

# A stand-in supervisor: starts a marked sleep in a session of its own, which starts
# another in a session of its own, then an unmarked sleep, and waits to be killed.
SUPERVISOR_SCRIPT = """
import os, subprocess, sys, time
from dtf.local.orphan_guard import OrphanGuard

guard = OrphanGuard()
marked = {**os.environ, **guard.environment()}
first, second, unmarked = sys.argv[1:]
subprocess.Popen(["sh", "-c", f"setsid sleep {first} & exec sleep {second}"], env=marked,
                 start_new_session=True)
subprocess.Popen(["sleep", unmarked], start_new_session=True)
print(guard.sidecar.pid, flush=True)
time.sleep(300)
"""


def sleeps(*durations: str) -> list[psutil.Process]:
    """Running ``sleep D`` processes for each duration D given."""
    wanted = [[duration] for duration in durations]
    return [
        process
        for process in psutil.process_iter(["name", "cmdline"])
        if process.info["name"] == "sleep" and (process.info["cmdline"] or [])[1:] in wanted
    ]


def is_alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(processes: list[psutil.Process], what: str) -> None:
    def all_gone() -> bool:
        return not any(is_alive(process) for process in processes)

    try:
        wait_for(all_gone, GONE_WITHIN_S, what)
    except AssertionError:
        left = [describe(process) for process in processes if is_alive(process)]
        raise AssertionError(f"{what}: still running {left}") from None


def describe(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return f"{process.pid} {' '.join(process.cmdline())}"
    return str(process.pid)


Started = psutil.Process | subprocess.Popen[Any]


@pytest.fixture
def cleanup() -> Iterator[list[Started]]:
    """Processes a failed test must not leave behind (those it started are reaped too)."""
    processes: list[Started] = []
    yield processes
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            process.kill()
        if isinstance(process, subprocess.Popen):
            process.wait(timeout=10)


@pytest.fixture
def durations() -> Iterator[list[str]]:
    """Sleep durations no other test run uses (301-303 s and a random fraction); every
    ``sleep`` of one of them still running afterwards is killed."""
    fraction = secrets.randbelow(10**6)
    unique = [f"{seconds}.{fraction:06d}" for seconds in (301, 302, 303)]
    yield unique
    for process in sleeps(*unique):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def test_marked_processes_die_with_a_sigkilled_supervisor(
    cleanup: list[Started], durations: list[str]
) -> None:
    first, second, unmarked_duration = durations[:3]
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR_SCRIPT, first, second, unmarked_duration],
        stdout=subprocess.PIPE,
        text=True,
    )
    cleanup.append(supervisor)
    assert supervisor.stdout is not None
    guard = psutil.Process(int(supervisor.stdout.readline()))
    wait_for(lambda: len(sleeps(*durations)) == 3, START_TIMEOUT_S, "the three sleeps")
    marked, [unmarked] = sleeps(first, second), sleeps(unmarked_duration)

    supervisor.kill()
    supervisor.wait(timeout=10)
    supervisor.stdout.close()
    wait_gone([*marked, guard], "the marked sleeps and the guard after kill -9")
    assert is_alive(unmarked)


def test_close_kills_marked_leftovers_only(cleanup: list[Started], durations: list[str]) -> None:
    guard = OrphanGuard()
    marked = subprocess.Popen(
        ["sleep", durations[0]], env={**os.environ, **guard.environment()}, start_new_session=True
    )
    unmarked = subprocess.Popen(["sleep", durations[1]], start_new_session=True)
    cleanup.extend([marked, unmarked])
    guard.close()
    assert marked.wait(timeout=GONE_WITHIN_S) == -signal.SIGKILL
    assert unmarked.poll() is None
    assert guard.sidecar.returncode == 0


def test_a_sidecar_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    """Its python cannot import dtf (no site-packages, no current directory on its path)."""
    python = tmp_path / "python-without-dtf"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S -P "$@"\n')
    python.chmod(0o755)
    with pytest.raises(DtfError, match=r"orphan guard sidecar .* did not report ready"):
        OrphanGuard(str(python))


def test_a_cluster_that_fails_to_start_leaves_no_sidecar(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        cluster = LocalCluster(ClusterSettings(tmp_path, workers=1, port=port))
        try:
            with pytest.raises(ClusterError, match=f"port {port}"):
                cluster.start()
            assert cluster.guard is not None
            assert cluster.guard.sidecar.poll() == 0
        finally:
            cluster.stop()


def etcd_members(directory: Path) -> list[psutil.Process]:
    """This process's etcd children whose data directories are below ``directory``."""
    return [
        process
        for process in psutil.Process().children()
        if process.name() == "etcd" and any(str(directory) in arg for arg in process.cmdline())
    ]


def test_etcd_members_restarted_after_the_start_are_marked_too(
    tmp_path: Path, cleanup: list[Started]
) -> None:
    require_etcd()
    guard = OrphanGuard()
    with EtcdCluster(tmp_path / "etcd", size=2, env=guard.environment()) as etcd:
        etcd.restart(1)
        members = etcd_members(tmp_path)
        cleanup.extend(members)
        assert len(members) == 2
        guard.close()
        wait_gone(members, "the etcd members, the restarted one too, once the guard closes")
        assert not etcd.is_running(1)


def test_a_pid_found_marked_that_now_names_an_unmarked_process_is_spared(
    tmp_path: Path, cleanup: list[Started], durations: list[str]
) -> None:
    """The scan saw the marker under a pid that an unmarked process holds by the time
    it is signalled (the marked one exited, the pid was reused)."""
    unmarked = subprocess.Popen(["sleep", durations[0]], start_new_session=True)
    marked = subprocess.Popen(
        ["sleep", durations[1]], env={**os.environ, MARKER_ENV: "abc"}, start_new_session=True
    )
    cleanup.extend([unmarked, marked])
    wait_for(
        lambda: carries_marker(Path(f"/proc/{marked.pid}/environ").read_bytes(), MARKER_ENV, "abc"),
        START_TIMEOUT_S,
        "the marked sleep's environment (Popen returns before exec has laid it out)",
    )
    for process in (unmarked, marked):
        (tmp_path / str(process.pid)).mkdir()
        (tmp_path / str(process.pid) / "environ").write_bytes(f"{MARKER_ENV}=abc\0".encode())
    found = marked_pids(MARKER_ENV, "abc", exclude=set(), proc=tmp_path)
    assert sorted(found) == sorted([unmarked.pid, marked.pid])

    killed = [pid for pid in found if kill_if_marked(pid, MARKER_ENV, "abc", spared_group=NO_GROUP)]
    assert killed == [marked.pid]
    assert marked.wait(timeout=GONE_WITHIN_S) == -signal.SIGKILL
    assert unmarked.poll() is None


def test_a_marked_process_takes_its_group_along_unless_the_group_is_spared(
    cleanup: list[Started], durations: list[str]
) -> None:
    marked_env = {**os.environ, MARKER_ENV: "abc"}
    script = f"env -u {MARKER_ENV} sleep {durations[0]} & exec sleep {durations[1]}"
    leader = subprocess.Popen(["sh", "-c", script], env=marked_env, start_new_session=True)
    in_spared_group = subprocess.Popen(["sleep", durations[2]], env=marked_env)
    unmarked_in_spared_group = subprocess.Popen(["sleep", durations[2]])
    cleanup.extend([leader, in_spared_group, unmarked_in_spared_group])
    wait_for(lambda: len(sleeps(durations[0])) == 1, START_TIMEOUT_S, "the unmarked sleep")
    [unmarked_in_group] = sleeps(durations[0])
    # A command line shown means exec has laid out the environment too.
    wait_for(lambda: len(sleeps(*durations[1:])) == 3, START_TIMEOUT_S, "the marked sleeps")

    for process in (leader, in_spared_group):
        assert kill_if_marked(process.pid, MARKER_ENV, "abc", spared_group=os.getpgrp())
    assert leader.wait(timeout=GONE_WITHIN_S) == -signal.SIGKILL
    assert in_spared_group.wait(timeout=GONE_WITHIN_S) == -signal.SIGKILL
    wait_gone([unmarked_in_group], "the unmarked sleep in the marked leader's group")
    assert unmarked_in_spared_group.poll() is None


def online_workers(url: str, admin_key_path: Path) -> int:
    if not admin_key_path.exists():
        return 0
    with Client(url, admin_key_path.read_text().strip(), timeout_s=2) as client:
        try:
            return sum(1 for worker in client.workers() if worker.get("status") == "online")
        except DtfError:
            return 0


@pytest.mark.timeout(300)
def test_dtf_up_killed_with_sigkill_leaves_nothing_running(
    tmp_path: Path, cleanup: list[Started], durations: list[str]
) -> None:
    port = find_free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    argv = [sys.executable, "-m", "dtf.cli", "up", "--workers", "2", "--port", str(port)]
    with (tmp_path / "up.log").open("wb") as log:
        up = subprocess.Popen(
            [*argv, "--data-dir", str(tmp_path / "data")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    cleanup.append(up)
    admin_key_path = tmp_path / "data" / "admin.key"
    wait_for(lambda: online_workers(url, admin_key_path) == 2, START_TIMEOUT_S, "2 workers")
    with Client(url, admin_key_path.read_text().strip()) as client:
        client.submit({"type": "command", "config": {"command": f"sleep {durations[0]}"}})
    wait_for(lambda: len(sleeps(durations[0])) == 1, START_TIMEOUT_S, "the task's sleep")
    started = psutil.Process(up.pid).children(recursive=True)
    cleanup.extend(started)
    names = [" ".join(process.cmdline()) for process in started]
    assert sum("dtf.cli worker" in name for name in names) == 2, names
    assert sum("dtf.cli coordinator" in name for name in names) == 1, names

    up.kill()
    up.wait(timeout=10)
    wait_gone(started, "every process dtf up started, after kill -9")
    assert "orphan guard: killed" in (tmp_path / "up.log").read_text()
