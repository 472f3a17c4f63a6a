"""``GET /api/failure-patterns`` on the real app: a worker that crashes every
task it gets, while another runs the same tasks fine, is named for quarantine,
first, with a high learned probability."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from dtf.cli import cli
from dtf.coordinator.server import create_app
from dtf.coordinator.settings import CoordinatorSettings
from dtf.local import ClusterSettings, LocalCluster

ADMIN = {"Authorization": "Bearer admin-secret"}
TASK_IDS = ["a", "b", "c"]
MAX_FRAMES = 20


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = CoordinatorSettings(data_dir=tmp_path, admin_key="admin-secret")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def register(ws: WebSocketTestSession, worker_id: str) -> list[dict[str, Any]]:
    """Register with three slots; the messages that came with the reply."""
    message = {
        "type": "register",
        "worker_id": worker_id,
        "session": f"{worker_id}-session",
        "capabilities": {"cpu_count": 2, "memory_gb": 4},
        "slots": 3,
    }
    ws.send_text(json.dumps(message))
    first = receive(ws)
    assert first[0]["type"] == "registered"
    return first[1:]


def receive(ws: WebSocketTestSession) -> list[dict[str, Any]]:
    frame = ws.receive_json()
    return frame if isinstance(frame, list) else [frame]


def collect(
    ws: WebSocketTestSession, kind: str, count: int, pending: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Messages of type ``kind`` until there are ``count``, reading at most ``MAX_FRAMES`` frames."""
    found = [m for m in pending or [] if m["type"] == kind]
    for _ in range(MAX_FRAMES):
        if len(found) >= count:
            return found
        found.extend(m for m in receive(ws) if m["type"] == kind)
    raise AssertionError(f"only {len(found)} of {count} {kind} messages arrived")


def report(
    ws: WebSocketTestSession, assignments: list[dict[str, Any]], outcome: dict[str, Any]
) -> None:
    for assign in assignments:
        lease = [assign["task_id"], assign["attempt"], assign["fence"]]
        ws.send_text(json.dumps({"type": "outcome", "lease": lease, "outcome": outcome}))
    collect(ws, "outcome_ack", len(assignments))


def test_a_worker_crashing_tasks_that_run_elsewhere_is_named(client: TestClient) -> None:
    retry_once = {"max_retries": 1, "retry_delay_seconds": 0}
    batch = {
        "tasks": [
            {
                "id": task_id,
                "type": "command",
                "config": {"command": "true"},
                "retry_policy": retry_once,
            }
            for task_id in TASK_IDS
        ]
    }
    assert client.post("/api/tasks/batch", json=batch, headers=ADMIN).status_code == 201
    with (
        client.websocket_connect("/api/workers/ws", headers=ADMIN) as bad,
        client.websocket_connect("/api/workers/ws", headers=ADMIN) as good,
    ):
        first_tries = collect(bad, "assign", 3, register(bad, "w-bad"))
        assert register(good, "w-good") == []
        report(
            bad,
            first_tries,
            {"failure": "crashed", "signal": 11, "stderr_tail": "Segmentation fault"},
        )
        retries = collect(good, "assign", 3)
        report(good, retries, {"exit_code": 0})

    reply = client.get("/api/failure-patterns", headers=ADMIN).json()
    assert reply["failures_considered"] == 3
    assert reply["window_s"] == 3600
    worker = next(p for p in reply["patterns"] if p["kind"] == "worker")
    assert worker["key"] == "w-bad"
    assert (worker["count"], worker["tasks"], worker["corroborating"]) == (3, 3, 3)
    assert worker["action"] == (
        "Quarantine worker w-bad: it failed 3 different tasks, 3 of which succeeded on other workers: `dtf workers disable w-bad`."
    )
    assert reply["patterns"][0] == worker
    assert worker["learned_probability"] > 0.9
    assert not [p for p in reply["patterns"] if p["kind"] == "task"]
    by_type = [p for p in reply["patterns"] if p["kind"] == "failure_type"]
    assert by_type and all(p["learned_probability"] is None for p in by_type)

    confident = client.get(
        "/api/failure-patterns", headers=ADMIN, params={"min_confidence": 0.7}
    ).json()
    assert [p["key"] for p in confident["patterns"]] == ["w-bad"]

    as_probable = {"min_probability": worker["learned_probability"]}
    probable = client.get("/api/failure-patterns", headers=ADMIN, params=as_probable).json()
    assert probable["patterns"] == reply["patterns"]
    certain = client.get(
        "/api/failure-patterns", headers=ADMIN, params={"min_probability": 1.0}
    ).json()
    assert by_type[0] in certain["patterns"]
    assert all(p["learned_probability"] in (None, 1.0) for p in certain["patterns"])


def test_bad_parameters_and_missing_key_are_refused(client: TestClient) -> None:
    assert client.get("/api/failure-patterns").status_code == 401
    for params in (
        {"window_s": 0},
        {"min_confidence": 1.5},
        {"min_probability": -0.1},
        {"window_s": "soon"},
    ):
        response = client.get("/api/failure-patterns", headers=ADMIN, params=params)
        assert response.status_code == 422, params
        assert "error" in response.json()
    empty = client.get("/api/failure-patterns", headers=ADMIN).json()
    assert empty == {"patterns": [], "failures_considered": 0, "window_s": 3600.0}


@pytest.mark.integration
def test_dtf_failures_prints_what_a_real_cluster_saw(tmp_path: Path) -> None:
    failing = {
        "type": "command",
        "config": {"command": "exit 3"},
        "retry_policy": {"max_retries": 0},
    }
    with LocalCluster(ClusterSettings(tmp_path, workers=1, slots=3)) as cluster:
        with cluster.client() as api:
            api.wait(api.submit_many([failing] * 3), timeout_s=60)
        connection = ["--coordinator", cluster.url, "--api-key", cluster.admin_key]
        as_json = CliRunner().invoke(
            cli, ["failures", "--min-confidence", "0", "--json", *connection]
        )
        # Wide enough for the recommended action to show whole words.
        as_table = CliRunner(env={"COLUMNS": "160"}).invoke(
            cli, ["failures", "--min-confidence", "0", *connection]
        )
    assert as_json.exit_code == 0, as_json.output
    reply = json.loads(as_json.output)
    assert reply["failures_considered"] == 3
    kinds = {(p["kind"], p["count"]) for p in reply["patterns"]}
    assert ("worker", 3) in kinds
    assert ("failure_type", 3) in kinds
    assert all("learned_probability" in p for p in reply["patterns"])
    assert as_table.exit_code == 0, as_table.output
    assert "Quarantine" in as_table.output, as_table.output
    assert "among 3 failures in the last 60m" in as_table.output
