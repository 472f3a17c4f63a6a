"""Checkpoints in a coordinator cluster: three real ``dtf coordinator --cluster``
processes on three real etcd members, a real worker and a real task that saves
checkpoints through one node; that node is SIGKILLed and the retry resumes
through another. Also the internal blob routes the nodes copy blobs with, and
the bounded wait for a peer's acknowledgement."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from dtf.client import Client
from dtf.coordinator.blob_peers import BlobPeers
from dtf.coordinator.checkpoint_store import CheckpointStore
from dtf.coordinator.server import create_app
from dtf.coordinator.settings import CoordinatorSettings
from dtf.errors import CoordinatorUnavailable
from dtf.local.ha_cluster import HaCluster, HaSettings, Node
from dtf.testing.etcd import require_etcd
from dtf.testing.waiting import wait_for

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HTTP_TIMEOUT_S = 10.0
STEPS = 24


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaCluster]:
    """Three coordinators and one worker; nothing restarts a node the tests kill."""
    require_etcd()
    settings = HaSettings(
        tmp_path_factory.mktemp("ha-checkpoints") / "cluster",
        nodes=3,
        workers=1,
        slots=1,
        base_port=0,
        log_level="warning",
        startup_timeout_s=45.0,
    )
    running = HaCluster(settings, lambda _kind, _fields: None)
    try:
        running.start_etcd()
        running.start_coordinators()
        running.wait_formed()
        running.start_workers()
        yield running
    finally:
        running.stop()


def live_nodes(cluster: HaCluster) -> list[Node]:
    processes = cluster.coordinator_processes()
    return [node for node in cluster.nodes if processes[node.node_id].is_running]


def admin(cluster: HaCluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.admin_key}"}


def blob_path(node: Node, digest: str) -> Path:
    return node.data_dir / "checkpoints" / "sha256" / digest[:2] / digest[2:]


def task_process(task_id: str, attempt: int) -> tuple[int, str] | None:
    """The process group of a running attempt and the coordinator URL it saves
    checkpoints through, found by the variables dtf gave it."""
    wanted = {f"DTF_TASK_ID={task_id}".encode(), f"DTF_ATTEMPT={attempt}".encode()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
            group = os.getpgid(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
        if wanted <= environ:
            [url] = [v[19:].decode() for v in environ if v.startswith(b"DTF_CHECKPOINT_URL=")]
            return group, url
    return None


def checkpoint_step(task: dict[str, Any]) -> int:
    checkpoint = task.get("checkpoint") or {}
    return int(checkpoint.get("step") or 0)


def test_a_retry_resumes_through_another_node_after_the_saving_node_is_killed(
    cluster: HaCluster,
) -> None:
    spec = {
        "type": "benchmark",
        "config": {
            "entry_point": "checkpoint_train:train",
            "params": {"steps": STEPS, "step_s": 0.1},
            "python_path": [str(EXAMPLES)],
        },
    }
    with Client(cluster.urls, cluster.admin_key) as client:
        task_id = client.submit(spec)
        wait_for(lambda: checkpoint_step(client.get(task_id)) >= 5, 30, "a few checkpoints")
        found = task_process(task_id, attempt=1)
        assert found is not None, "the first attempt's process was not found"
        group, saving_url = found
        [saving_node] = [node for node in cluster.nodes if node.url == saving_url]
        saving_process = cluster.coordinator_processes()[saving_node.node_id]
        saving_process.kill_tree()
        os.killpg(group, signal.SIGKILL)
        killed_at_step = checkpoint_step(client.get(task_id))
        [task] = client.wait([task_id], timeout_s=45)
    assert not saving_process.is_running  # so the retry could not have used it
    assert task["status"] == "completed", task
    first, resumed = task["attempts"][0], task["attempts"][-1]
    assert first["status"] == "failed" and first["checkpoints_saved"] >= 5
    assert resumed["resumed_from"]["attempt"] == 1
    resumed_step = resumed["resumed_from"]["step"]
    assert resumed_step >= killed_at_step >= 5
    metrics = resumed["outcome"]["metrics"]
    assert metrics["resumed_from_step"] == resumed_step
    assert metrics["steps_run_this_attempt"] == STEPS - resumed_step
    digest = resumed["resumed_from"]["digest"]
    for node in live_nodes(cluster):
        assert blob_path(node, digest).exists(), f"{node.node_id} has no copy of {digest}"


def test_a_node_without_a_blob_fetches_it_from_the_node_that_has_it(cluster: HaCluster) -> None:
    holder, asked = live_nodes(cluster)[:2]
    data = os.urandom(3000)
    digest = hashlib.sha256(data).hexdigest()
    with httpx.Client(headers=admin(cluster), timeout=HTTP_TIMEOUT_S) as http:
        stored = http.put(f"{holder.url}/api/internal/blobs/{digest}", content=data)
        assert stored.status_code == 201, stored.text
        assert not blob_path(asked, digest).exists()
        internal = http.get(f"{asked.url}/api/internal/blobs/{digest}")
        served = http.get(f"{asked.url}/api/checkpoints/{digest}")
    assert internal.status_code == 404  # the internal route never asks other nodes
    assert served.status_code == 200 and served.content == data
    assert blob_path(asked, digest).read_bytes() == data


def test_internal_blob_copies_are_checked_admin_only_and_idempotent(cluster: HaCluster) -> None:
    node = live_nodes(cluster)[0]
    data = b"weights"
    url = f"{node.url}/api/internal/blobs/{hashlib.sha256(data).hexdigest()}"
    worker = {"Authorization": f"Bearer {cluster.worker_key}"}
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        anonymous = http.put(url, content=data)
        as_worker = http.put(url, content=data, headers=worker)
        wrong = http.put(url, content=b"other weights", headers=admin(cluster))
        first = http.put(url, content=data, headers=admin(cluster))
        again = http.put(url, content=data, headers=admin(cluster))
        bad_name = http.get(f"{node.url}/api/internal/blobs/admin.key", headers=admin(cluster))
    assert anonymous.status_code == 401
    assert as_worker.status_code == 403
    assert wrong.status_code == 422
    assert "their SHA-256 differs" in wrong.json()["error"]["message"]
    assert first.status_code == again.status_code == 201
    assert first.json() == {"digest": url.rsplit("/", 1)[1], "bytes": len(data)}
    assert bad_name.status_code == 422
    assert "not a checkpoint digest" in bad_name.json()["error"]["message"]


def test_a_standalone_coordinator_has_no_internal_blob_routes(tmp_path: Path) -> None:
    settings = CoordinatorSettings(data_dir=tmp_path, admin_key="standalone-admin")
    digest = hashlib.sha256(b"x").hexdigest()
    headers = {"Authorization": "Bearer standalone-admin"}
    with TestClient(create_app(settings)) as api:
        stored = api.put(f"/api/internal/blobs/{digest}", content=b"x", headers=headers)
        missing = api.get(f"/api/checkpoints/{digest}", headers=headers)
    assert stored.status_code == 404
    assert missing.status_code == 404
    assert "not stored on this coordinator" in missing.json()["error"]["message"]


def test_a_save_is_refused_when_no_peer_acknowledges_in_time(tmp_path: Path) -> None:
    """A peer that accepts connections but never answers: the wait is bounded."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        store = CheckpointStore(tmp_path, max_bytes=1000)
        peers = BlobPeers(store, lambda: [f"http://127.0.0.1:{port}"], "admin", ack_timeout_s=0.3)

        async def save() -> None:
            try:
                await peers.replicate(store.put(b"state"), b"state")
            finally:
                await peers.close()

        with pytest.raises(CoordinatorUnavailable, match=r"no other answer within 0\.3 s"):
            asyncio.run(save())
