"""The cluster API of a real ``dtf coordinator`` process started without ``--cluster``:
every ``/api/cluster`` route, the ``cluster`` topic of ``/ws``, and ``dtf cluster``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from dtf.local import ClusterSettings, LocalCluster

pytestmark = pytest.mark.integration

ADMIN_KEY = "cluster-api-admin-key"
RECEIVE_TIMEOUT_S = 10
COMMAND_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    settings = ClusterSettings(
        data_dir=tmp_path_factory.mktemp("cluster-api"), workers=0, admin_key=ADMIN_KEY
    )
    with LocalCluster(settings) as running:
        yield running


@pytest.fixture
def http(coordinator: LocalCluster) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=coordinator.url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
def node_id(http: httpx.Client) -> str:
    return str(http.get("/api/cluster/status").json()["node_id"])


def test_status_describes_one_node_leading_epoch_1(
    http: httpx.Client, coordinator: LocalCluster
) -> None:
    status = http.get("/api/cluster/status").json()
    assert (status["mode"], status["is_leader"], status["healthy"]) == ("standalone", True, True)
    assert status["leader"]["epoch"] == 1 and status["leader"]["ended_at"] is None
    assert status["leader"]["url"] == coordinator.url
    [node] = status["nodes"]
    assert (node["node_id"], node["role"], node["enabled"], node["lag"]) == (
        status["node_id"], "leader", True, 0,
    )  # fmt: skip
    assert node["applied_seq"] == status["applied_seq"] >= 1  # Configure/CoordinatorStarted


def test_nodes_and_leader_routes(http: httpx.Client, node_id: str) -> None:
    [node] = http.get("/api/cluster/nodes").json()["nodes"]
    assert node["node_id"] == node_id
    leadership = http.get("/api/cluster/leader").json()
    assert leadership["leader"]["node_id"] == node_id
    assert leadership["history"] == [leadership["leader"]]


def test_health_needs_no_key(coordinator: LocalCluster, node_id: str) -> None:
    reply = httpx.get(f"{coordinator.url}/api/cluster/health", timeout=30)
    assert reply.status_code == 200
    assert reply.json()["healthy"] is True
    assert (reply.json()["node_id"], reply.json()["is_leader"]) == (node_id, True)


def test_reads_need_a_key(coordinator: LocalCluster) -> None:
    reply = httpx.get(f"{coordinator.url}/api/cluster/status", timeout=30)
    assert reply.status_code == 401
    assert "missing API key" in reply.json()["error"]["message"]


def test_the_only_node_cannot_be_disabled(http: httpx.Client, node_id: str) -> None:
    reply = http.post(f"/api/cluster/node/{node_id}/disable", json={"reason": "maintenance"})
    assert reply.status_code == 409
    error = reply.json()["error"]
    assert error["type"] == "Conflict"
    assert "standalone coordinator cannot be disabled" in error["message"]
    assert http.get("/api/cluster/health").status_code == 200


def test_enable_answers_the_node_with_or_without_a_body(http: httpx.Client, node_id: str) -> None:
    with_body = http.post(f"/api/cluster/node/{node_id}/enable", json={"reason": "back"})
    without = http.post(f"/api/cluster/node/{node_id}/enable")
    assert with_body.status_code == without.status_code == 200
    assert with_body.json()["node_id"] == node_id and with_body.json()["enabled"] is True


def test_unknown_nodes_and_bad_bodies_are_json_4xx(http: httpx.Client, node_id: str) -> None:
    missing = http.post("/api/cluster/node/ghost/disable", json={"reason": "x"})
    assert missing.status_code == 404
    assert "'ghost' is not in this cluster" in missing.json()["error"]["message"]
    wrong_type = http.post(f"/api/cluster/node/{node_id}/enable", json={"reason": 5})
    assert wrong_type.status_code == 422
    assert wrong_type.json()["error"]["field"] == "reason"
    unknown = http.post(f"/api/cluster/node/{node_id}/enable", json={"why": "x"})
    assert unknown.status_code == 422 and "why" in unknown.json()["error"]["message"]
    long_reason = http.post(f"/api/cluster/node/{node_id}/enable", json={"reason": "x" * 501})
    assert long_reason.status_code == 422


def test_only_an_admin_may_disable_or_enable(http: httpx.Client, node_id: str) -> None:
    viewer_key = http.post("/api/keys", json={"role": "viewer"}).json()["key"]
    viewer = {"Authorization": f"Bearer {viewer_key}"}
    refused = http.post(f"/api/cluster/node/{node_id}/enable", headers=viewer)
    assert refused.status_code == 403
    assert http.get("/api/cluster/status", headers=viewer).status_code == 200


def live(coordinator: LocalCluster) -> ClientConnection:
    url = coordinator.url.replace("http://", "ws://") + "/ws"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    return connect(url, additional_headers=headers, proxy=None, open_timeout=RECEIVE_TIMEOUT_S)


def receive(websocket: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(websocket.recv(timeout=RECEIVE_TIMEOUT_S))
    return message


def test_live_cluster_subscription_starts_from_the_current_state(
    coordinator: LocalCluster, node_id: str
) -> None:
    with live(coordinator) as websocket:
        assert receive(websocket) == {"type": "authenticated"}
        websocket.send(json.dumps({"type": "subscribe", "topics": ["cluster"], "request_id": "s"}))
        subscribed, status, leadership = (receive(websocket) for _ in range(3))
        websocket.send(json.dumps({"type": "get_cluster_status", "request_id": "g"}))
        answer = receive(websocket)
    assert subscribed == {"type": "subscribed", "topics": ["cluster"], "request_id": "s"}
    assert status["type"] == "cluster_status_update"
    assert (status["node_id"], status["mode"]) == (node_id, "standalone")
    assert leadership["type"] == "leadership_update"
    assert leadership["leader"]["epoch"] == 1 and len(leadership["history"]) == 1
    assert (answer["type"], answer["request_id"], answer["node_id"]) == (
        "cluster_status", "g", node_id,
    )  # fmt: skip


def dtf(coordinator: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    env.update(DTF_COORDINATOR=coordinator.url, DTF_API_KEY=ADMIN_KEY, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "dtf.cli", "cluster", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def test_dtf_cluster_status_json_is_the_api_status(
    coordinator: LocalCluster, http: httpx.Client, node_id: str
) -> None:
    result = dtf(coordinator, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["node_id"], status["leader"]["epoch"], status["mode"]) == (
        node_id, 1, "standalone",
    )  # fmt: skip
    assert status["nodes"][0]["role"] == "leader"


def test_dtf_cluster_status_text_shows_nodes_leader_and_history(
    coordinator: LocalCluster, node_id: str
) -> None:
    result = dtf(coordinator, "status")
    assert result.returncode == 0, result.stderr
    assert f"leader: {node_id} at {coordinator.url}, epoch 1, since " in result.stdout
    assert "healthy" in result.stdout and "leadership" in result.stdout
    assert result.stdout.count(node_id) >= 3  # header, leader line, table row


def test_dtf_cluster_nodes_leader_enable_and_a_refused_disable(
    coordinator: LocalCluster, node_id: str
) -> None:
    assert json.loads(dtf(coordinator, "nodes", "--json").stdout)["nodes"][0]["node_id"] == node_id
    assert json.loads(dtf(coordinator, "leader", "--json").stdout)["leader"]["epoch"] == 1
    enabled = dtf(coordinator, "enable", node_id)
    assert enabled.returncode == 0 and f"{node_id} (leader): enabled" in enabled.stdout
    refused = dtf(coordinator, "disable", node_id, "--reason", "maintenance")
    assert refused.returncode == 1
    assert "standalone coordinator cannot be disabled" in refused.stderr
    assert "Traceback" not in refused.stderr
