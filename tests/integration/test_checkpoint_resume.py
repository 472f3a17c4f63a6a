"""Checkpoints end to end: blobs on disk, the HTTP routes in process, and a
real task SIGKILLed mid-way on a real local cluster that resumes where it was."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from dtf.coordinator.checkpoint_grants import GrantIssuer
from dtf.coordinator.checkpoint_store import CheckpointStore, CheckpointTooLarge
from dtf.coordinator.server import create_app
from dtf.coordinator.settings import CoordinatorSettings
from dtf.core.model import LeaseRef
from dtf.errors import InvalidRequest, NotFound
from dtf.local.cluster import ClusterSettings, LocalCluster
from dtf.testing.waiting import wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ADMIN_KEY = "admin-secret"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


# -- the blob store ------------------------------------------------------------


def test_blobs_are_stored_by_their_sha256_once_and_whole(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints", max_bytes=1000)
    digest = store.put(b"weights")
    assert digest == hashlib.sha256(b"weights").hexdigest()
    assert (
        tmp_path / "checkpoints" / "sha256" / digest[:2] / digest[2:]
    ).read_bytes() == b"weights"
    assert store.put(b"weights") == digest
    assert store.get(digest) == b"weights"
    assert [p.name for p in (tmp_path / "checkpoints" / "sha256" / digest[:2]).iterdir()] == [
        digest[2:]
    ]
    with pytest.raises(NotFound, match="not stored"):
        store.get("0" * 64)
    with pytest.raises(InvalidRequest, match="not a checkpoint digest"):
        store.get("../../admin.key")
    with pytest.raises(CheckpointTooLarge, match="1001 bytes exceeds the coordinator's limit"):
        store.put(b"x" * 1001)


# -- the routes, in process ----------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    settings = CoordinatorSettings(data_dir=tmp_path, admin_key=ADMIN_KEY, max_body_bytes=64_000)
    with TestClient(create_app(settings)) as client:
        yield client


def assigned_lease(api: TestClient, worker_id: str = "w1") -> LeaseRef:
    """Register an HTTP worker, submit a task, return the lease it was given."""
    register = {"worker_id": worker_id, "session": "s1", "capabilities": {}, "slots": 1}
    assert api.post("/api/workers/register", json=register, headers=ADMIN).status_code == 200
    spec = {"type": "command", "config": {"command": "true"}, "id": "train"}
    assert api.post("/api/tasks", json=spec, headers=ADMIN).status_code == 201
    [assign] = api.get(f"/api/workers/{worker_id}/assignments", headers=ADMIN).json()
    return LeaseRef(assign["task_id"], assign["attempt"], assign["fence"])


def save(api: TestClient, lease: LeaseRef, body: bytes, **extra: Any) -> httpx.Response:
    token = GrantIssuer(ADMIN_KEY).token(lease)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    headers.update(extra.pop("headers", {}))
    params = {"attempt": lease.attempt, "fence": lease.fence, **extra}
    return api.post(
        f"/api/tasks/{lease.task_id}/checkpoints", content=body, headers=headers, params=params
    )


def test_a_checkpoint_saved_with_the_attempts_token_is_served_back(api: TestClient) -> None:
    lease = assigned_lease(api)
    saved = save(api, lease, b'{"step": 3}', step=3)
    assert saved.status_code == 201, saved.text
    assert saved.json()["digest"] == hashlib.sha256(b'{"step": 3}').hexdigest()
    token = GrantIssuer(ADMIN_KEY).token(lease)
    latest = api.get(
        "/api/tasks/train/checkpoints/latest", headers={"Authorization": f"Bearer {token}"}
    )
    assert latest.json() == {"step": 3}
    assert latest.headers["x-dtf-checkpoint-step"] == "3"
    assert latest.headers["x-dtf-checkpoint-attempt"] == "1"
    blob = api.get(f"/api/checkpoints/{saved.json()['digest']}", headers=ADMIN)
    assert blob.content == b'{"step": 3}'
    task = api.get("/api/tasks/train", headers=ADMIN).json()
    assert task["checkpoint"]["step"] == 3
    assert task["attempts"][0]["checkpoints_saved"] == 1


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        # a token for another attempt of the task
        ({"token_attempt": 2}, 403, "token is for attempt 2"),
        # a token that was never issued
        ({"headers": {"Authorization": "Bearer dtfcp_1_1_" + "0" * 64}}, 401, "not valid"),
        # a body that is not the JSON its content type says
        ({"body": b"{not json"}, 422, "not valid JSON"),
        # a content type that is neither bytes nor JSON
        ({"headers": {"Content-Type": "text/plain"}}, 422, "application/octet-stream"),
        # more than the coordinator takes
        ({"body": b"x" * 70_000}, 413, "larger than 64000 bytes"),
        # a negative step
        ({"step": -1}, 422, "step"),
    ],
)
def test_bad_saves_are_refused_with_json_naming_the_problem(
    api: TestClient, change: dict[str, Any], status: int, words: str
) -> None:
    lease = assigned_lease(api)
    token_lease = LeaseRef(lease.task_id, change.pop("token_attempt", lease.attempt), lease.fence)
    headers = {"Authorization": f"Bearer {GrantIssuer(ADMIN_KEY).token(token_lease)}"}
    headers.update(change.pop("headers", {}))
    response = save(api, lease, change.pop("body", b"{}"), headers=headers, **change)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


def test_a_stale_leases_save_is_refused_and_changes_nothing(api: TestClient) -> None:
    first = assigned_lease(api)
    assert save(api, first, b'{"step": 1}', step=1).status_code == 201
    outcome = {
        "lease": [first.task_id, first.attempt, first.fence],
        "outcome": {"failure": "crashed"},
    }
    assert api.post("/api/workers/w1/outcome", json=outcome, headers=ADMIN).status_code == 200
    register = {"worker_id": "w2", "session": "s1", "capabilities": {}, "slots": 1}
    api.post("/api/workers/register", json=register, headers=ADMIN)

    def retried() -> bool:
        return len(api.get("/api/tasks/train", headers=ADMIN).json()["attempts"]) == 2

    wait_for(retried, 30, "the retry to be assigned")
    refused = save(api, first, b'{"step": 2}', step=2)
    assert refused.status_code == 409
    assert "no longer holds its lease" in refused.json()["error"]["message"]
    task = api.get("/api/tasks/train", headers=ADMIN).json()
    assert task["checkpoint"]["step"] == 1
    assert task["attempts"][1]["resumed_from"]["step"] == 1


def test_an_assignment_carries_the_grant_for_its_process(api: TestClient) -> None:
    with api.websocket_connect("/api/workers/ws", headers=ADMIN) as socket:
        socket.send_json(
            {
                "type": "register",
                "worker_id": "ws1",
                "session": "s1",
                "capabilities": {},
                "slots": 1,
            }
        )
        assert socket.receive_json()["type"] == "registered"
        spec = {"type": "command", "config": {"command": "true"}, "id": "train"}
        api.post("/api/tasks", json=spec, headers=ADMIN)
        assign = socket.receive_json()
    assert assign["type"] == "assign"
    grant = assign["checkpoint"]
    assert grant["url"] == "http://testserver"
    lease = LeaseRef("train", assign["attempt"], assign["fence"])
    assert grant["token"] == GrantIssuer(ADMIN_KEY).token(lease)
    assert grant["resumed_from"] is None


def test_an_assignment_polled_over_http_carries_the_grant_too(api: TestClient) -> None:
    register = {"worker_id": "poller", "session": "s1", "capabilities": {}, "slots": 1}
    assert api.post("/api/workers/register", json=register, headers=ADMIN).is_success
    spec = {"type": "command", "config": {"command": "true"}, "id": "polled"}
    api.post("/api/tasks", json=spec, headers=ADMIN)
    [assign] = api.get("/api/workers/poller/assignments", headers=ADMIN).json()
    lease = LeaseRef("polled", assign["attempt"], assign["fence"])
    grant = assign["checkpoint"]
    assert grant["url"] == "http://testserver"
    assert grant["token"] == GrantIssuer(ADMIN_KEY).token(lease)
    assert grant["resumed_from"] is None


# -- a real task, really killed ------------------------------------------------


def task_process_group(task_id: str, attempt: int) -> int | None:
    """The process group of a running attempt, found by the variables dtf gave it."""
    wanted = {f"DTF_TASK_ID={task_id}".encode(), f"DTF_ATTEMPT={attempt}".encode()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
            if wanted <= environ:
                return os.getpgid(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return None


def checkpoint_step(task: dict[str, Any]) -> int:
    checkpoint = task.get("checkpoint") or {}
    return int(checkpoint.get("step") or 0)


@pytest.mark.integration
def test_a_task_killed_mid_way_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    settings = ClusterSettings(tmp_path / "data", workers=2, slots=1, lease_timeout_s=3.0)
    spec = {
        "type": "benchmark",
        "config": {
            "entry_point": "checkpoint_train:train",
            "params": {"steps": 30, "step_s": 0.15},
            "python_path": [str(EXAMPLES)],
        },
    }
    with LocalCluster(settings) as cluster, cluster.client() as client:
        task_id = client.submit(spec)
        wait_for(lambda: checkpoint_step(client.get(task_id)) >= 5, 60, "a few checkpoints")
        group = task_process_group(task_id, attempt=1)
        assert group is not None, "the first attempt's process was not found"
        os.killpg(group, signal.SIGKILL)
        killed_at_step = checkpoint_step(client.get(task_id))
        [task] = client.wait([task_id], timeout_s=90)
        fenced = GrantIssuer(cluster.admin_key).token(
            LeaseRef(task_id, 1, task["attempts"][0]["fence"])
        )
        stale = httpx.post(
            f"{cluster.url}/api/tasks/{task_id}/checkpoints",
            params={"attempt": 1, "fence": task["attempts"][0]["fence"], "step": 0},
            content=b'{"step": 0, "loss": 1.0}',
            headers={"Authorization": f"Bearer {fenced}", "Content-Type": "application/json"},
        )
    assert task["status"] == "completed", task
    first, resumed = task["attempts"][0], task["attempts"][-1]
    assert first["status"] == "failed" and first["checkpoints_saved"] >= 5
    assert resumed["resumed_from"]["attempt"] == 1
    resumed_step = resumed["resumed_from"]["step"]
    assert resumed_step >= killed_at_step >= 5
    metrics = resumed["outcome"]["metrics"]
    assert metrics["resumed_from_step"] == resumed_step
    assert metrics["steps_run_this_attempt"] == 30 - resumed_step
    assert task["checkpoint"]["step"] == 30
    assert stale.status_code == 409
    assert "no longer holds its lease" in stale.json()["error"]["message"]


@pytest.mark.integration
def test_the_sdk_in_a_real_task_sees_a_saved_null_as_a_checkpoint(tmp_path: Path) -> None:
    script = (
        "from dtf.worker import checkpoint; "
        "before = checkpoint.available(); checkpoint.save(None, step=1); "
        "print('available', before, checkpoint.available(), checkpoint.load('absent'))"
    )
    spec = {"type": "command", "config": {"command": [sys.executable, "-c", script]}}
    settings = ClusterSettings(tmp_path / "data", workers=1, slots=1)
    with LocalCluster(settings) as cluster, cluster.client() as client:
        [task] = client.wait([client.submit(spec)], timeout_s=60)
    assert task["status"] == "completed", task
    assert "available False True None" in task["attempts"][0]["outcome"]["stdout_tail"]
