"""``dtf worker --audit-log``: every task process the worker starts and stops, with why,
from real ``dtf coordinator`` and ``dtf worker`` processes on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from dtf.client import Client
from dtf.local.processes import ManagedProcess, start_process
from dtf.testing.coordinator import running_coordinator
from dtf.testing.fleet import dtf_argv
from dtf.testing.waiting import wait_for
from dtf.worker.audit import AuditEvent, AuditRecord, read_audit_log

pytestmark = pytest.mark.integration

WAIT_S = 60.0
LEASE_TIMEOUT_S = 2.0


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[tuple[ManagedProcess, Client]]:
    with running_coordinator(tmp_path, "--lease-timeout", str(LEASE_TIMEOUT_S)) as started:
        yield started


def long_task(pid_file: Path) -> dict[str, Any]:
    return {
        "type": "command",
        "config": {"command": f"echo $$ > {pid_file}; exec sleep 60"},
        "retry_policy": {"max_retries": 0},
    }


def started_pid(client: Client, task_id: str, pid_file: Path) -> int:
    wait_for(lambda: client.get(task_id)["status"] == "running", WAIT_S, f"{task_id} to run")
    wait_for(lambda: has_pid(pid_file), WAIT_S, f"a pid in {pid_file}")
    return int(pid_file.read_text())


def has_pid(pid_file: Path) -> bool:
    return pid_file.exists() and pid_file.read_text().strip().isdigit()


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_audit_log_records_each_start_and_how_each_process_ended(
    coordinator: tuple[ManagedProcess, Client], tmp_path: Path
) -> None:
    process, client = coordinator
    audit_log = tmp_path / "audit" / "worker.jsonl"
    argv = dtf_argv("worker", "--coordinator", client.url, "--worker-id", "audited")
    argv += ["--work-dir", str(tmp_path / "work"), "--audit-log", str(audit_log)]
    env = {**os.environ, "DTF_API_KEY": client_key(client)}
    worker = start_process("worker", argv, tmp_path / "worker.log", env)
    try:
        quick = client.submit({"type": "command", "config": {"command": "true"}})
        client.wait([quick], timeout_s=WAIT_S)

        cancelled = client.submit(long_task(tmp_path / "cancelled.pid"))
        cancelled_pid = started_pid(client, cancelled, tmp_path / "cancelled.pid")
        client.cancel(cancelled)
        wait_for(lambda: is_gone(cancelled_pid), WAIT_S, "the cancelled task to be killed")

        fenced = client.submit(long_task(tmp_path / "fenced.pid"))
        fenced_pid = started_pid(client, fenced, tmp_path / "fenced.pid")
        os.kill(process.pid, signal.SIGSTOP)  # heartbeats go unanswered
        wait_for(lambda: is_gone(fenced_pid), WAIT_S, "the worker to fence its task")
        os.kill(process.pid, signal.SIGCONT)

        stopped = client.submit(long_task(tmp_path / "stopped.pid"))
        stopped_pid = started_pid(client, stopped, tmp_path / "stopped.pid")
    finally:
        assert worker.stop(WAIT_S) == 0, worker.log_tail()
    by_task = records_by_task(read_audit_log(audit_log))
    assert [r.event for r in by_task[quick]] == [AuditEvent.STARTED, AuditEvent.EXITED]
    assert ended(by_task[cancelled], cancelled_pid) == "cancelled by the coordinator"
    assert ended(by_task[fenced], fenced_pid).startswith("self-fenced: lease not renewed for")
    assert ended(by_task[stopped], stopped_pid) == "worker stopping"
    assert {r.worker_id for records in by_task.values() for r in records} == {"audited"}


def client_key(client: Client) -> str:
    return str(client.create_key("worker", "audited worker")["key"])


def records_by_task(records: list[AuditRecord]) -> dict[str, list[AuditRecord]]:
    by_task: dict[str, list[AuditRecord]] = {}
    for record in records:
        by_task.setdefault(record.task_id, []).append(record)
    return by_task


def ended(records: list[AuditRecord], pid: int) -> str:
    """The reason a process that was started once and killed once gave; checks the pair."""
    start, end = records
    assert (start.event, end.event) == (AuditEvent.STARTED, AuditEvent.KILLED)
    assert start.pid == end.pid == pid
    assert (start.attempt, start.fence) == (end.attempt, end.fence)
    assert start.monotonic <= end.monotonic and start.time <= end.time
    assert end.reason is not None
    return end.reason


def test_help_describes_the_audit_log() -> None:
    result = subprocess.run(
        dtf_argv("worker", "--help"), capture_output=True, text=True, check=True
    )
    assert "--audit-log" in result.stdout
    assert "what ran on this machine when" in " ".join(result.stdout.split())
