"""The coordinator's HTTP and WebSocket API, in process with a real journal on disk.

Bad input of every kind gets a JSON 4xx naming the problem, and the service
keeps serving with nothing accepted lost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dtf.coordinator.server import create_app
from dtf.coordinator.settings import CoordinatorSettings
from dtf.errors import Conflict
from dtf.journal.sqlite import JournalError, SqliteJournal

ADMIN = {"Authorization": "Bearer admin-secret"}
COMMAND = {"type": "command", "config": {"command": "true"}}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = CoordinatorSettings(
        data_dir=tmp_path, admin_key="admin-secret", max_body_bytes=64_000
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


def submit(client: TestClient, spec: dict[str, Any], **params: Any) -> Any:
    return client.post("/api/tasks", json=spec, headers=ADMIN, params=params)


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        # unknown task type
        ({"type": "teleport", "config": {}}, "type", "Invalid enum value 'teleport'"),
        # unknown top-level field
        ({**COMMAND, "colour": "red"}, None, "unknown field `colour`"),
        # wrong type
        ({**COMMAND, "priority": "high"}, "priority", "Expected `int`, got `str`"),
        # negative timeout
        ({**COMMAND, "timeout_seconds": -5}, "timeout_seconds", "Expected `float` > 0"),
        # config that does not fit the task type
        ({"type": "command", "config": {"cmd": "true"}}, "config", "`cmd`"),
        # benchmark entry point without a function
        (
            {"type": "benchmark", "config": {"entry_point": "mod"}},
            "config.entry_point",
            "matching regex",
        ),
        # unknown dependency
        ({**COMMAND, "dependencies": ["nope"]}, "dependencies", "unknown task 'nope'"),
        # requirement of the wrong shape
        (
            {**COMMAND, "requirements": {"hardware": ["quantum"]}},
            "requirements.hardware[0]",
            "quantum",
        ),
    ],
)
def test_invalid_task_is_refused_naming_the_field(
    client: TestClient, spec: dict[str, Any], field: str | None, words: str
) -> None:
    response = submit(client, spec)
    assert response.status_code == 422
    error = error_of(response)
    assert words in error["message"]
    if field is not None:
        assert error["field"] == field


def test_dependency_cycle_in_a_batch_is_refused(client: TestClient) -> None:
    batch = {
        "tasks": [
            {**COMMAND, "id": "a", "dependencies": ["b"]},
            {**COMMAND, "id": "b", "dependencies": ["a"]},
        ]
    }
    response = client.post("/api/tasks/batch", json=batch, headers=ADMIN)
    assert response.status_code == 422
    assert "cycle" in error_of(response)["message"]
    assert client.get("/api/status", headers=ADMIN).json()["tasks"] == {}


def test_batch_submit_and_idempotent_resubmit(client: TestClient) -> None:
    batch = {"tasks": [{**COMMAND, "id": f"t{i}"} for i in range(50)]}
    first = client.post("/api/tasks/batch", json=batch, headers=ADMIN).json()["tasks"]
    again = client.post("/api/tasks/batch", json=batch, headers=ADMIN).json()["tasks"]
    assert [t["task_id"] for t in first] == [f"t{i}" for i in range(50)]
    assert not any(t["duplicate"] for t in first)
    assert all(t["duplicate"] for t in again)
    assert client.get("/api/tasks", headers=ADMIN).json()["total"] == 50


def test_idempotency_key_returns_the_first_task(client: TestClient) -> None:
    spec = {**COMMAND, "idempotency_key": "nightly-42"}
    first = submit(client, spec).json()
    second = submit(client, spec).json()
    assert second == {**first, "duplicate": True}


def test_same_id_with_a_different_spec_conflicts(client: TestClient) -> None:
    submit(client, {**COMMAND, "id": "job"})
    response = submit(client, {**COMMAND, "id": "job", "priority": 1})
    assert response.status_code == 409
    assert "different spec" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "malformed JSON"),
        (b"", "request body is empty"),
        (
            b'{"type": "command", "config": {"x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}}",
            "nested too deeply",
        ),
        (b'"just a string"', "Expected `object`"),
    ],
)
def test_malformed_bodies_get_a_json_error(client: TestClient, body: bytes, words: str) -> None:
    response = client.post("/api/tasks", content=body, headers=ADMIN)
    assert 400 <= response.status_code < 500
    assert words in error_of(response)["message"]
    assert client.get("/health").json()["ok"] is True


def test_oversized_body_is_413(client: TestClient) -> None:
    spec = {**COMMAND, "labels": {"blob": "x" * 200}, "name": "n"}
    batch = {"tasks": [spec] * 1000}
    response = client.post("/api/tasks/batch", content=json.dumps(batch), headers=ADMIN)
    assert response.status_code == 413
    assert "larger than" in error_of(response)["message"]


def test_unsatisfiable_task_waits_with_a_reason_or_is_refused(client: TestClient) -> None:
    spec = {**COMMAND, "requirements": {"hardware": ["cuda"], "min_memory_gb": 32}}
    refused = submit(client, spec, reject_unsatisfiable="true")
    assert refused.status_code == 422
    assert "no live worker can run" in error_of(refused)["message"]
    task_id = submit(client, spec).json()["task_id"]
    task = client.get(f"/api/tasks/{task_id}", headers=ADMIN).json()
    assert task["status"] == "pending"
    assert task["waiting"]["summary"] == "no workers are online"


def test_roles_and_keys(client: TestClient) -> None:
    assert client.get("/api/tasks").status_code == 401
    assert client.get("/api/tasks", headers={"Authorization": "Bearer wrong"}).status_code == 401
    keys = {}
    for role in ("viewer", "submitter", "worker"):
        created = client.post("/api/keys", json={"role": role}, headers=ADMIN)
        assert created.status_code == 201
        keys[role] = {"Authorization": f"Bearer {created.json()['key']}"}
    assert client.get("/api/tasks", headers=keys["viewer"]).status_code == 200
    assert submit_with(client, keys["viewer"]).status_code == 403
    assert submit_with(client, keys["worker"]).status_code == 403
    assert submit_with(client, keys["submitter"]).status_code == 201
    assert (
        client.post("/api/keys", json={"role": "admin"}, headers=keys["submitter"]).status_code
        == 403
    )


def submit_with(client: TestClient, headers: dict[str, str]) -> Any:
    return client.post("/api/tasks", json=COMMAND, headers=headers)


def test_unknown_routes_and_tasks_are_json_404(client: TestClient) -> None:
    assert "no such endpoint" in error_of(client.get("/api/nothing", headers=ADMIN))["message"]
    missing = client.get("/api/tasks/ghost", headers=ADMIN)
    assert missing.status_code == 404
    assert "ghost" in error_of(missing)["message"]


def test_openapi_document_lists_the_task_schema(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert "/api/tasks/batch" in document["paths"]
    assert "TaskSpec" in document["components"]["schemas"]


def test_every_schema_the_openapi_document_points_at_is_in_it(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    pointers = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(document)))
    assert {"WaitRequest", "LookupRequest", "SubmitBatch"} <= pointers
    assert pointers <= set(document["components"]["schemas"])


def test_websocket_garbage_and_foreign_reports_get_errors(client: TestClient) -> None:
    task_id = submit(client, COMMAND).json()["task_id"]
    with client.websocket_connect("/api/workers/ws", headers=ADMIN) as ws:
        ws.send_text("this is not json")
        assert "register message first" in ws.receive_json()["message"]
    register = {
        "type": "register",
        "worker_id": "w1",
        "session": "s1",
        "capabilities": {"cpu_count": 2, "memory_gb": 4},
        "slots": 1,
    }
    with client.websocket_connect("/api/workers/ws", headers=ADMIN) as ws:
        ws.send_text(json.dumps(register))
        assert ws.receive_json()["type"] == "registered"
        assignment = ws.receive_json()
        assert assignment["type"] == "assign"
        assert assignment["task_id"] == task_id
        ws.send_text("{{{")
        assert "unreadable message" in ws.receive_json()["message"]
        foreign = {"type": "outcome", "lease": ["someone-else", 1, 99], "outcome": {}}
        ws.send_text(json.dumps(foreign))
        refusal = ws.receive_json()
        assert "unknown task" in refusal["message"]
        assert refusal["lease"] == foreign["lease"]
        stale = {"type": "outcome", "lease": [task_id, 1, 99], "outcome": {}}
        ws.send_text(json.dumps(stale))
        assert "does not hold" in ws.receive_json()["message"]
        done = {
            "type": "outcome",
            "lease": [task_id, 1, assignment["fence"]],
            "outcome": {"exit_code": 0},
        }
        ws.send_text(json.dumps(done))
        assert ws.receive_json()["type"] == "outcome_ack"
    task = client.get(f"/api/tasks/{task_id}", headers=ADMIN).json()
    assert task["status"] == "completed"
    assert [a["status"] for a in task["attempts"]] == ["succeeded"]


def test_a_registration_holding_attempts_says_which_it_renewed(client: TestClient) -> None:
    """Sent after the registration is applied, so a worker whose heartbeats cannot get
    through (a coordinator restarting again and again) still has its leases renewed."""
    task_id = submit(client, COMMAND).json()["task_id"]
    register = {"type": "register", "worker_id": "w1", "capabilities": {}, "slots": 1}
    with client.websocket_connect("/api/workers/ws", headers=ADMIN) as ws:
        ws.send_text(json.dumps({**register, "session": "s1"}))
        assert ws.receive_json()["type"] == "registered"
        assignment = ws.receive_json()
    held = [task_id, 1, assignment["fence"]]
    not_held = [task_id, 1, assignment["fence"] + 7]
    before = client.get(f"/api/tasks/{task_id}", headers=ADMIN).json()["lease"]
    with client.websocket_connect("/api/workers/ws", headers=ADMIN) as ws:
        ws.send_text(json.dumps({**register, "session": "s2", "held": [held, not_held]}))
        assert ws.receive_json()["type"] == "registered"
        renewal = ws.receive_json()
    assert renewal == {"type": "leases_renewed", "renewed": [held], "lease_timeout_s": 10.0}
    after = client.get(f"/api/tasks/{task_id}", headers=ADMIN).json()["lease"]
    assert after[-1] > before[-1], "the registration renewed the lease"


def test_a_registration_holding_nothing_gets_no_renewal(client: TestClient) -> None:
    register = {"type": "register", "worker_id": "w1", "session": "s1", "capabilities": {}}
    with client.websocket_connect("/api/workers/ws", headers=ADMIN) as ws:
        ws.send_text(json.dumps({**register, "slots": 1}))
        assert ws.receive_json()["type"] == "registered"
        task_id = submit(client, COMMAND).json()["task_id"]
        assert ws.receive_json()["type"] == "assign", "the next message is the assignment"
    assert client.get(f"/api/tasks/{task_id}", headers=ADMIN).json()["status"] == "assigned"


def test_wait_answers_with_counts_and_what_is_unfinished(client: TestClient) -> None:
    ids = [submit(client, COMMAND).json()["task_id"] for _ in range(2)]
    client.post(f"/api/tasks/{ids[0]}/cancel", headers=ADMIN)
    reply = client.post(
        "/api/tasks/wait", json={"task_ids": ids, "timeout_s": 0.05}, headers=ADMIN
    ).json()
    assert reply == {
        "done": False,
        "counts": {"cancelled": 1, "pending": 1},
        "unfinished": [ids[1]],
        "unfinished_total": 1,
    }
    client.post(f"/api/tasks/{ids[1]}/cancel", headers=ADMIN)
    reply = client.post("/api/tasks/wait", json={"task_ids": ids}, headers=ADMIN).json()
    assert reply["done"] and reply["counts"] == {"cancelled": 2}


def test_lookup_answers_the_listed_tasks_in_their_order(client: TestClient) -> None:
    ids = [submit(client, {**COMMAND, "priority": i}).json()["task_id"] for i in range(3)]
    client.post(f"/api/tasks/{ids[1]}/cancel", headers=ADMIN)
    wanted = [ids[2], ids[0], ids[1], ids[2]]
    reply = client.post("/api/tasks/lookup", json={"task_ids": wanted}, headers=ADMIN).json()
    assert [task["id"] for task in reply["tasks"]] == wanted
    statuses = [task["status"] for task in reply["tasks"]]
    assert statuses == ["pending", "pending", "cancelled", "pending"]
    cancelled = client.get(f"/api/tasks/{ids[1]}", headers=ADMIN).json()
    assert reply["tasks"][2] == cancelled


@pytest.mark.parametrize(
    ("route", "body", "status", "message"),
    [
        ("wait", {"task_ids": []}, 422, "task_ids"),
        ("wait", {"task_ids": ["t"], "timeout_s": 301}, 422, "timeout_s"),
        ("wait", {"task_ids": ["no-such-task"]}, 404, "'no-such-task' does not exist"),
        ("lookup", {"task_ids": []}, 422, "task_ids"),
        ("lookup", {"task_ids": "t"}, 422, "task_ids"),
        ("lookup", {"task_ids": ["t"], "timeout_s": 1}, 422, "unknown field `timeout_s`"),
        ("lookup", {"task_ids": ["ghost-1", "ghost-2", "ghost-1"]}, 404, "2 of the listed tasks"),
        ("lookup", {"task_ids": ["t"] * 10_001}, 422, "task_ids"),
    ],
)
def test_routes_taking_task_lists_refuse_bad_bodies(
    client: TestClient, route: str, body: dict[str, Any], status: int, message: str
) -> None:
    response = client.post(f"/api/tasks/{route}", json=body, headers=ADMIN)
    assert response.status_code == status
    assert message in error_of(response)["message"]


def test_state_survives_a_restart_on_the_same_data_dir(tmp_path: Path) -> None:
    settings = CoordinatorSettings(data_dir=tmp_path, admin_key="admin-secret")
    with TestClient(create_app(settings)) as first:
        ids = [submit(first, {**COMMAND, "priority": i}).json()["task_id"] for i in range(5)]
        first.post(f"/api/tasks/{ids[0]}/cancel", headers=ADMIN)
    with TestClient(create_app(settings)) as second:
        tasks = second.get("/api/tasks", headers=ADMIN, params={"order": "asc"}).json()["tasks"]
    assert [t["id"] for t in tasks] == ids
    assert [t["status"] for t in tasks] == ["cancelled"] + ["pending"] * 4


def test_restart_from_a_snapshot_and_a_compacted_journal(tmp_path: Path) -> None:
    settings = CoordinatorSettings(data_dir=tmp_path, admin_key="admin-secret", snapshot_every=5)
    with TestClient(create_app(settings)) as first:
        ids = [submit(first, {**COMMAND, "name": f"n{i}"}).json()["task_id"] for i in range(12)]
        first.post(f"/api/tasks/{ids[3]}/cancel", headers=ADMIN)
    journal = SqliteJournal(tmp_path)
    try:
        snapshot = journal.load_snapshot()
        assert snapshot is not None and snapshot[0] >= 10
        with pytest.raises(JournalError, match=r"compacted up to the snapshot"):
            list(journal.read(0))
    finally:
        journal.close()
    with TestClient(create_app(settings)) as second:
        tasks = second.get("/api/tasks", headers=ADMIN, params={"order": "asc"}).json()["tasks"]
    assert [t["id"] for t in tasks] == ids
    assert [t["status"] for t in tasks].count("cancelled") == 1


def test_a_second_coordinator_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    settings = CoordinatorSettings(data_dir=tmp_path, admin_key="admin-secret")
    with TestClient(create_app(settings)), pytest.raises(Conflict, match="another coordinator"):
        create_app(settings)
    with TestClient(create_app(settings)) as again:
        assert again.get("/health").json()["ok"] is True
