"""The live channel ``/ws`` of a real coordinator app: authentication, requests,
pushed updates, and errors that leave the connection serving."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from dtf.coordinator import live
from dtf.coordinator.live_messages import Topic
from dtf.coordinator.server import create_app
from dtf.coordinator.settings import CoordinatorSettings
from dtf.core.events import BreakerChanged, TaskAccepted, TaskStatusChanged
from dtf.core.records import TaskStatus

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = CoordinatorSettings(data_dir=tmp_path, admin_key="admin-secret")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def receive(websocket: Any) -> dict[str, Any]:
    message: dict[str, Any] = websocket.receive_json()
    return message


def test_header_authentication_and_a_status_request(client: TestClient) -> None:
    with client.websocket_connect("/ws", headers=ADMIN) as websocket:
        assert receive(websocket) == {"type": "authenticated"}
        websocket.send_json({"type": "get_status", "request_id": "r1"})
        status = receive(websocket)
    assert (status["type"], status["request_id"]) == ("status", "r1")
    assert "tasks" in status and "journal_seq" in status


def test_a_browser_authenticates_with_its_first_message(client: TestClient) -> None:
    with client.websocket_connect("/ws") as websocket:
        websocket.send_json({"type": "authenticate", "key": "admin-secret"})
        assert receive(websocket) == {"type": "authenticated"}


def test_a_bad_key_is_refused_with_a_policy_violation(client: TestClient) -> None:
    with client.websocket_connect("/ws") as websocket:
        websocket.send_json({"type": "authenticate", "key": "wrong"})
        with pytest.raises(WebSocketDisconnect) as refused:
            websocket.receive_json()
    assert refused.value.code == 1008
    assert "invalid API key" in refused.value.reason


def test_subscribers_see_tasks_change_as_they_are_applied(client: TestClient) -> None:
    with client.websocket_connect("/ws", headers=ADMIN) as websocket:
        receive(websocket)
        websocket.send_json({"type": "subscribe", "topics": ["tasks"], "request_id": "s"})
        assert receive(websocket) == {"type": "subscribed", "topics": ["tasks"], "request_id": "s"}
        spec = {"id": "t1", "type": "command", "config": {"command": "true"}}
        assert client.post("/api/tasks", json=spec, headers=ADMIN).status_code == 201
        update = receive(websocket)
        assert client.post("/api/tasks/t1/cancel", headers=ADMIN).status_code == 200
        cancelled = receive(websocket)
    assert update == {"type": "task_submitted", "task_id": "t1", "status": "pending"}
    assert (cancelled["old"], cancelled["new"]) == ("pending", "cancelled")


def test_aggregated_results_are_served_over_the_channel(client: TestClient) -> None:
    with client.websocket_connect("/ws", headers=ADMIN) as websocket:
        receive(websocket)
        request = {"type": "get_aggregated_results", "by": ["model"], "request_id": "a"}
        websocket.send_json(request)
        reply = receive(websocket)
    assert reply == {
        "type": "aggregated_results",
        "by": ["model"],
        "metric": None,
        "groups": [],
        "request_id": "a",
    }


def test_bad_requests_get_an_error_and_the_connection_keeps_serving(client: TestClient) -> None:
    with client.websocket_connect("/ws", headers=ADMIN) as websocket:
        receive(websocket)
        websocket.send_text("{not json")
        assert receive(websocket)["type"] == "error"
        websocket.send_json({"type": "subscribe", "topics": ["weather"]})
        error = receive(websocket)
        assert error["type"] == "error" and "weather" in error["message"]
        bad_dimension = {"type": "get_aggregated_results", "by": ["colour"], "request_id": "x"}
        websocket.send_json(bad_dimension)
        error = receive(websocket)
        assert (error["type"], error["request_id"]) == ("error", "x")
        websocket.send_json({"type": "get_status"})
        assert receive(websocket)["type"] == "status"


def test_events_map_to_topics() -> None:
    accepted = live.update_of(TaskAccepted("t", TaskStatus.PENDING))
    assert accepted is not None and accepted[0] is Topic.TASKS
    assert live.update_of(TaskStatusChanged("t", TaskStatus.BLOCKED, TaskStatus.PENDING)) is None
    changed = live.update_of(TaskStatusChanged("t", TaskStatus.PENDING, TaskStatus.ASSIGNED))
    assert changed is not None and changed[1]["new"] == "assigned"
    breaker = live.update_of(BreakerChanged("worker w1", "closed", "open", "3 faults"))
    assert breaker == (
        Topic.BREAKERS,
        {
            "type": "breaker_update",
            "breaker": "worker w1",
            "old": "closed",
            "new": "open",
            "reason": "3 faults",
        },
    )
    assert live.update_of(TaskAccepted("t", TaskStatus.PENDING, duplicate=True)) is None


def test_a_full_outbox_tells_the_channel_to_let_the_client_go() -> None:
    async def fill() -> list[bool]:
        client = live._Client(websocket=None)  # type: ignore[arg-type]
        client.outbox = asyncio.Queue(2)
        return [client.send({"n": n}) for n in range(3)]

    assert asyncio.run(fill()) == [True, True, False]


def test_a_second_authenticate_is_checked_too(client: TestClient) -> None:
    with client.websocket_connect("/ws", headers=ADMIN) as websocket:
        receive(websocket)
        websocket.send_json({"type": "authenticate", "key": "wrong", "request_id": "again"})
        reply = receive(websocket)
    assert (reply["type"], reply["request_id"]) == ("error", "again")
    assert "invalid API key" in reply["message"]
