"""``POST /api/tasks/wait`` and ``Client.wait`` against real ``dtf coordinator`` and
``dtf worker`` processes: the request held open is answered when the tasks finish,
woken by their events (were it not, it would be held for its 300 s timeout, past
this test's own time limit)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dtf.client import Client
from dtf.local.processes import start_process
from dtf.testing.coordinator import running_coordinator
from dtf.testing.fleet import dtf_argv
from dtf.testing.waiting import wait_for

pytestmark = pytest.mark.integration

WAIT_S = 60.0
SHORT = {"type": "command", "config": {"command": ["sleep", "0.3"]}}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    with running_coordinator(tmp_path) as (_, client):
        key = str(client.create_key("worker", "wait test")["key"])
        argv = dtf_argv("worker", "--coordinator", client.url, "--slots", "2")
        argv += ["--worker-id", "w1", "--work-dir", str(tmp_path / "work")]
        worker = start_process("w1", argv, tmp_path / "w1.log", {**os.environ, "DTF_API_KEY": key})
        try:
            wait_for(lambda: bool(client.workers()), WAIT_S, "the worker to register")
            yield client
        finally:
            assert worker.stop(WAIT_S) == 0, worker.log_tail()


def test_a_held_wait_is_answered_when_the_tasks_finish(client: Client) -> None:
    task_ids = client.submit_many([SHORT] * 4)
    viewer = {"Authorization": f"Bearer {client.create_key('viewer', 'waits')['key']}"}
    body = {"task_ids": task_ids, "timeout_s": 300}
    response = httpx.post(f"{client.url}/api/tasks/wait", json=body, headers=viewer, timeout=300)
    assert response.json() == {
        "done": True,
        "counts": {"completed": 4},
        "unfinished": [],
        "unfinished_total": 0,
    }


def test_client_wait_returns_every_task_finished(client: Client) -> None:
    failing = {
        "type": "command",
        "config": {"command": ["false"]},
        "retry_policy": {"max_retries": 0},
    }
    task_ids = client.submit_many([SHORT, failing])
    seen: list[dict[str, int]] = []
    tasks = client.wait(task_ids, timeout_s=WAIT_S, on_poll=seen.append)
    assert [t["id"] for t in tasks] == task_ids
    assert [t["status"] for t in tasks] == ["completed", "failed"]
    assert seen[-1] == {"completed": 1, "failed": 1}
