"""Read-your-writes: responses carry the applied log position; requests can ask for one."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dtf.client import Client
from dtf.coordinator.consistency import AppliedPosition
from dtf.errors import CoordinatorUnavailable
from dtf.protocol import APPLIED_SEQ_HEADER, MIN_SEQ_HEADER


class Log:
    def __init__(self, applied: int, tail: int) -> None:
        self.applied, self.tail = applied, tail
        self.waited: list[tuple[int, float]] = []

    async def wait_applied(self, seq: int, timeout_s: float) -> None:
        self.waited.append((seq, timeout_s))
        if seq > self.tail:
            raise CoordinatorUnavailable(f"entry {seq} not applied after {timeout_s} s")
        self.applied = seq


def app_over(log: Log, *, can_wait: bool = True) -> FastAPI:
    app = FastAPI()

    @app.get("/api/status")
    async def status() -> dict[str, int]:
        return {"applied": log.applied}

    app.add_middleware(
        AppliedPosition,
        applied_seq=lambda: log.applied,
        wait_applied=log.wait_applied if can_wait else None,
    )
    return app


def test_every_response_says_how_far_the_node_has_applied() -> None:
    with TestClient(app_over(Log(applied=7, tail=7))) as http:
        response = http.get("/api/status")
    assert response.headers[APPLIED_SEQ_HEADER] == "7"


def test_a_request_waits_until_the_node_has_applied_what_the_client_saw() -> None:
    log = Log(applied=3, tail=10)
    with TestClient(app_over(log)) as http:
        response = http.get("/api/status", headers={MIN_SEQ_HEADER: "9"})
    assert response.json() == {"applied": 9}
    assert response.headers[APPLIED_SEQ_HEADER] == "9"
    assert [seq for seq, _ in log.waited] == [9]


def test_a_node_that_cannot_catch_up_answers_503_so_the_client_moves_on() -> None:
    with TestClient(app_over(Log(applied=3, tail=5))) as http:
        response = http.get("/api/status", headers={MIN_SEQ_HEADER: "9"})
    assert response.status_code == 503
    assert "already saw" in response.json()["error"]["message"]


def test_no_wait_when_already_there_or_when_the_node_cannot_wait() -> None:
    log = Log(applied=12, tail=12)
    with TestClient(app_over(log)) as http:
        assert http.get("/api/status", headers={MIN_SEQ_HEADER: "4"}).status_code == 200
    assert log.waited == []
    with TestClient(app_over(Log(applied=1, tail=1), can_wait=False)) as http:
        assert http.get("/api/status", headers={MIN_SEQ_HEADER: "4"}).status_code == 200


@pytest.mark.parametrize("seen", ["41", "garbage", None])
def test_the_client_sends_back_the_highest_position_it_has_seen(seen: str | None) -> None:
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get(MIN_SEQ_HEADER))
        headers = {APPLIED_SEQ_HEADER: seen} if seen is not None else {}
        return httpx.Response(200, json={"ok": True}, headers=headers)

    with Client("http://node-a:1", transport=httpx.MockTransport(handler)) as client:
        client.status()
        client.status()
    assert sent == [None, seen if seen == "41" else None]
