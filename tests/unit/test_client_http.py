"""The Python client against a mocked network: URL rotation, error mapping, idempotent submits."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from dtf import errors
from dtf.client import (
    LONG_POLL_S,
    LOOKUP_CHUNK,
    Client,
    WaitTimeout,
    error_from_response,
    parse_coordinators,
)

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, coordinator: str = "http://a:1", **kwargs: object) -> Client:
    return Client(coordinator, "secret", transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]


def error_body(message: str, field: str | None, type_name: str) -> dict[str, object]:
    return {"error": {"message": message, "field": field, "type": type_name}}


def test_parse_coordinators_accepts_comma_separated_and_strips_slashes() -> None:
    assert parse_coordinators(" http://a:1/, http://b:2 ") == ["http://a:1", "http://b:2"]
    assert parse_coordinators(["http://a:1"]) == ["http://a:1"]


@pytest.mark.parametrize("bad", ["", " , ", "a:1", "ftp://x"])
def test_parse_coordinators_rejects_bad_urls(bad: str) -> None:
    with pytest.raises(errors.InvalidRequest, match="coordinator"):
        parse_coordinators(bad)


def test_rotates_to_next_url_on_connection_error_and_stays_there() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        if request.url.host == "a":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"tasks": {}, "workers": {}})

    client = make_client(handler, "http://a:1,http://b:2")
    client.status()
    client.status()
    assert seen == ["a", "b", "b"]
    assert client.url == "http://b:2"


def test_rotates_past_a_503_for_idempotent_calls() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            return httpx.Response(503, json=error_body("not the leader", None, "X"))
        return httpx.Response(200, json={"ok": True})

    assert make_client(handler, "http://a:1,http://b:2").health()


def test_all_urls_unreachable_names_them_and_says_what_to_do() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(errors.CoordinatorUnavailable) as caught:
        make_client(handler, "http://a:1,http://b:2").status()
    assert "http://a:1 (refused)" in caught.value.message
    assert "http://b:2 (refused)" in caught.value.message
    assert "DTF_COORDINATOR" in caught.value.message


def test_non_idempotent_call_is_not_resent_after_a_read_error() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.host)
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(errors.CoordinatorUnavailable, match="may or may not have been applied"):
        make_client(handler, "http://a:1,http://b:2").create_key("worker")
    assert calls == ["a"]


def test_submit_resent_after_read_error_carries_the_same_idempotency_key() -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if request.url.host == "a":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(201, json={"task_id": "t-1", "status": "pending", "duplicate": True})

    client = make_client(handler, "http://a:1,http://b:2")
    assert client.submit({"type": "command", "config": {"command": "true"}}) == "t-1"
    keys = {str(body["idempotency_key"]) for body in bodies}
    assert len(bodies) == 2
    assert len(keys) == 1
    assert keys.pop().startswith("client-")


def test_submit_with_an_id_sends_no_generated_key() -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        assert request.url.params.get("reject_unsatisfiable") == "true"
        return httpx.Response(201, json={"task_id": "mine", "status": "pending"})

    client = make_client(handler)
    spec = {"type": "command", "config": {"command": "true"}, "id": "mine"}
    assert client.submit(spec, reject_unsatisfiable=True) == "mine"
    assert "idempotency_key" not in bodies[0]


def test_invalid_spec_is_rejected_before_sending() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing should be sent")

    with pytest.raises(errors.InvalidRequest, match=r"\$\.priority"):
        make_client(handler).submit({"type": "command", "config": {}, "priority": "high"})


def test_submit_many_posts_one_batch() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert request.url.path == "/api/tasks/batch"
        assert body["reject_unsatisfiable"] is False
        ids = [f"t-{i}" for i in range(len(body["tasks"]))]
        return httpx.Response(201, json={"tasks": [{"task_id": i} for i in ids]})

    specs = [{"type": "command", "config": {"command": "true"}}] * 3
    assert make_client(handler).submit_many(specs) == ["t-0", "t-1", "t-2"]


def test_sends_bearer_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer secret"
        return httpx.Response(200, json={"workers": [{"id": "w1"}]})

    assert make_client(handler).workers() == [{"id": "w1"}]


@pytest.mark.parametrize(
    ("status", "type_name", "expected"),
    [
        (401, "Unauthorized", errors.Unauthorized),  # named type wins
        (403, "", errors.Forbidden),  # unknown type: mapped by status
        (404, "", errors.NotFound),
        (409, "InvalidTransition", errors.InvalidTransition),
        (409, "", errors.Conflict),
        (413, "", errors.InvalidRequest),  # body too large
        (422, "Unsatisfiable", errors.Unsatisfiable),
        (422, "ValidationError", errors.InvalidRequest),  # a non-dtf type name
        (418, "", errors.DtfError),  # anything else
    ],
)
def test_error_mapping(status: int, type_name: str, expected: type[errors.DtfError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=error_body("bad value 7", "priority", type_name))

    with pytest.raises(expected) as caught:
        make_client(handler).get("t-1")
    assert type(caught.value) is expected
    assert caught.value.message == "bad value 7"
    assert caught.value.field == "priority"


def test_error_without_json_body_names_status_and_url() -> None:
    request = httpx.Request("GET", "http://a:1/api/tasks/x")
    error = error_from_response(httpx.Response(500, text="boom", request=request))
    assert error.message == "HTTP 500 from http://a:1/api/tasks/x"


class FakeClock:
    """Time passes only while the (fake) coordinator holds a long poll."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def wait_reply(unfinished: list[str], counts: dict[str, int]) -> httpx.Response:
    body = {"done": not unfinished, "counts": counts, "unfinished": unfinished}
    return httpx.Response(200, json={**body, "unfinished_total": len(unfinished)})


def lookup_reply(request: httpx.Request) -> httpx.Response:
    ids = json.loads(request.content)["task_ids"]
    return httpx.Response(200, json={"tasks": [{"id": i, "status": "completed"} for i in ids]})


def test_wait_long_polls_until_done_then_looks_the_tasks_up() -> None:
    sent: list[dict[str, Any]] = []
    clock = FakeClock()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/tasks/lookup":
            return lookup_reply(request)
        body = json.loads(request.content)
        sent.append(body)
        clock.now += body["timeout_s"]
        if len(sent) < 3:
            return wait_reply(["b"], {"completed": 1, "running": 1})
        return wait_reply([], {"completed": 2})

    seen: list[dict[str, int]] = []
    client = make_client(handler, clock=clock)
    tasks = client.wait(["a", "b"], timeout_s=60, on_poll=seen.append)
    assert [t["id"] for t in tasks] == ["a", "b"]
    assert [b["task_ids"] for b in sent] == [["a", "b"]] * 3
    assert [b["timeout_s"] for b in sent] == [LONG_POLL_S] * 3
    assert seen == [{"completed": 1, "running": 1}] * 2 + [{"completed": 2}]


def test_lookup_asks_in_chunks_and_keeps_the_order() -> None:
    asked: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/api/tasks/lookup")
        asked.append(json.loads(request.content)["task_ids"])
        return lookup_reply(request)

    ids = [f"t{n}" for n in range(2 * LOOKUP_CHUNK + 1)]
    tasks = make_client(handler).lookup(ids)
    assert [t["id"] for t in tasks] == ids
    assert [len(chunk) for chunk in asked] == [LOOKUP_CHUNK, LOOKUP_CHUNK, 1]


def test_wait_times_out_with_a_clear_message() -> None:
    clock = FakeClock()
    held: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        held.append(json.loads(request.content)["timeout_s"])
        clock.now += held[-1]
        return wait_reply(["slow"], {"pending": 1})

    client = make_client(handler, clock=clock)
    with pytest.raises(
        WaitTimeout, match=r"1 of 1 tasks not finished after 7s.*dtf task show slow"
    ):
        client.wait(["slow"], timeout_s=7)
    assert held == [LONG_POLL_S, 7 - LONG_POLL_S]


def test_list_and_results_pass_query_parameters() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        if request.url.path == "/api/tasks":
            assert params == {"status": "failed", "limit": "5", "offset": "10"}
            return httpx.Response(200, json={"tasks": [{"id": "x"}], "total": 11})
        assert params == {"task_id": "x", "limit": "100", "offset": "0"}
        return httpx.Response(200, json={"results": []})

    client = make_client(handler)
    assert client.list("failed", limit=5, offset=10) == [{"id": "x"}]
    assert client.results("x") == []


def test_context_manager_closes() -> None:
    with make_client(lambda r: httpx.Response(200, json={"ok": True})) as client:
        assert client.health()
    assert client._http.is_closed
