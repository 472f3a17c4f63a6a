"""The cluster view the API serves: the standalone coordinator's answers, the JSON
shapes of the routes and live updates, and the live channel's ``cluster`` topic."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest

from dtf import __version__
from dtf.cli.cluster import header_line, history_table, leader_line, nodes_table
from dtf.cluster.view import (
    LEADERSHIP_UPDATE,
    ClusterListener,
    ClusterStatus,
    ClusterView,
    LeaderTerm,
    NodeInfo,
    StandaloneCluster,
    find_node,
    leadership_json,
    status_json,
)
from dtf.coordinator.live import LiveChannel, _Client
from dtf.coordinator.live_messages import Topic
from dtf.coordinator.runtime import Runtime
from dtf.errors import Conflict, NotFound
from dtf.results.store import ResultsStore

STARTED_AT = 1_000.0
NOW = 1_060.0


def standalone(applied_seq: int = 42) -> StandaloneCluster:
    return StandaloneCluster(
        "host-8080", "http://127.0.0.1:8080", lambda: applied_seq, STARTED_AT, clock=lambda: NOW
    )


def test_a_standalone_coordinator_is_the_leader_of_epoch_1_since_it_started() -> None:
    status = standalone().status()
    assert status.leader == LeaderTerm(
        1, "host-8080", "http://127.0.0.1:8080", STARTED_AT, None, None
    )
    assert (status.mode, status.is_leader, status.healthy) == ("standalone", True, True)
    assert (status.applied_seq, status.log_seq) == (42, 42)
    [node] = status.nodes
    assert (node.role, node.enabled, node.lag, node.healthy) == ("leader", True, 0, True)
    assert (node.started_at, node.updated_at, node.version) == (STARTED_AT, NOW, __version__)


def test_the_standalone_applied_position_is_read_on_every_call() -> None:
    positions = iter([1, 2])
    cluster = StandaloneCluster("n", "http://127.0.0.1:1", lambda: next(positions), STARTED_AT)
    assert [cluster.nodes()[0].applied_seq, cluster.nodes()[0].applied_seq] == [1, 2]


def test_the_only_node_cannot_be_disabled_and_says_how_to_run_a_cluster() -> None:
    with pytest.raises(Conflict) as refused:
        asyncio.run(standalone().set_node_enabled("host-8080", False, "maintenance"))
    assert "standalone coordinator cannot be disabled" in refused.value.message
    assert "dtf coordinator --cluster" in refused.value.message
    assert refused.value.status_code == 409


def test_enabling_the_enabled_node_answers_it_and_an_unknown_node_is_404() -> None:
    cluster = standalone()
    node = asyncio.run(cluster.set_node_enabled("host-8080", True, ""))
    assert node.enabled
    with pytest.raises(NotFound) as missing:
        asyncio.run(cluster.set_node_enabled("other", True, ""))
    assert missing.value.status_code == 404
    assert "'other'" in missing.value.message and "host-8080" in missing.value.message


def test_status_json_has_the_documented_fields_and_encodes() -> None:
    data = status_json(standalone().status())
    assert set(data) == {
        "name", "mode", "node_id", "leader", "is_leader", "applied_seq", "log_seq", "nodes",
        "healthy", "detail",
    }  # fmt: skip
    assert set(data["nodes"][0]) == {
        "node_id", "url", "role", "enabled", "disabled_reason", "applied_seq", "lag",
        "started_at", "updated_at", "healthy", "version",
    }  # fmt: skip
    assert msgspec.json.decode(msgspec.json.encode(data)) == data


def term(epoch: int, ended_at: float | None = None, reason: str | None = None) -> LeaderTerm:
    return LeaderTerm(
        epoch, f"n{epoch}", f"http://127.0.0.1:{epoch}", 10.0 * epoch, ended_at, reason
    )


def test_leadership_json_names_the_current_term_and_keeps_the_history_order() -> None:
    terms = [term(7), term(5, 69.0, "lease expired")]
    data = leadership_json(terms)
    assert data["leader"] == {
        "epoch": 7, "node_id": "n7", "url": "http://127.0.0.1:7", "started_at": 70.0,
        "ended_at": None, "end_reason": None,
    }  # fmt: skip
    assert [t["epoch"] for t in data["history"]] == [7, 5]
    assert data["history"][1]["end_reason"] == "lease expired"


def test_during_an_election_there_is_no_leader_but_the_history_remains() -> None:
    data = leadership_json([term(5, 69.0, "resigned: shutdown")])
    assert data["leader"] is None and len(data["history"]) == 1
    assert leadership_json([]) == {"leader": None, "history": []}


def test_find_node_lists_the_known_nodes_when_one_is_missing() -> None:
    nodes = standalone().nodes()
    assert find_node(nodes, "host-8080") is nodes[0]
    with pytest.raises(NotFound, match=r"\(nodes: host-8080\)"):
        find_node(nodes, "ghost")


def test_cli_lines_and_tables_render_the_api_json() -> None:
    status = status_json(standalone().status())
    assert leader_line(status["leader"]).startswith("leader: host-8080 at http://127.0.0.1:8080")
    assert "epoch 1" in leader_line(status["leader"])
    assert "election" in leader_line(None)
    assert header_line(status).startswith("standalone coordinator (started without --cluster)")
    in_cluster = {**status, "mode": "cluster", "name": "prod", "log_seq": 50}
    assert header_line(in_cluster).startswith("cluster prod of 1 node, log seq 50, answered by")
    assert nodes_table(status["nodes"]).row_count == 1
    history = leadership_json([term(7), term(5, 69.0, "lease expired")])["history"]
    assert history_table(history).row_count == 2


class FakeCluster:
    """A cluster view whose leadership the test changes by hand."""

    def __init__(self) -> None:
        self.listeners: list[ClusterListener] = []
        self.terms = [term(3)]

    def status(self) -> ClusterStatus:
        return replace(standalone().status(), name="c", mode="cluster", leader=self.terms[0])

    def nodes(self) -> list[NodeInfo]:
        return standalone().nodes()

    def leadership(self) -> list[LeaderTerm]:
        return self.terms

    def health(self) -> tuple[bool, str]:
        return True, "ok"

    async def set_node_enabled(self, node_id: str, enabled: bool, reason: str) -> NodeInfo:
        return find_node(self.nodes(), node_id)

    def subscribe(self, listener: ClusterListener) -> None:
        self.listeners.append(listener)

    def elect(self, epoch: int) -> None:
        ended = replace(self.terms[0], ended_at=float(epoch), end_reason="lease expired")
        self.terms = [term(epoch), ended]
        for listener in self.listeners:
            listener(LEADERSHIP_UPDATE, leadership_json(self.terms))


def channel(cluster: ClusterView) -> LiveChannel:
    bus = SimpleNamespace(subscribe=lambda _subscriber: None)
    runtime = cast(Runtime, SimpleNamespace(bus=bus))
    return LiveChannel(runtime, cast(ResultsStore, None), cluster)


def queued(client: _Client) -> list[dict[str, Any]]:
    messages = []
    while not client.outbox.empty():
        messages.append(client.outbox.get_nowait())
    return messages


def test_leadership_changes_reach_only_cluster_subscribers() -> None:
    cluster = FakeCluster()
    live = channel(cluster)
    watching, other = _Client(websocket=None), _Client(websocket=None)  # type: ignore[arg-type]
    watching.topics.add(Topic.CLUSTER)
    other.topics.add(Topic.TASKS)
    live.clients.update({watching, other})
    cluster.elect(4)
    [update] = queued(watching)
    assert update["type"] == "leadership_update"
    assert update["leader"]["epoch"] == 4
    assert update["history"][1]["end_reason"] == "lease expired"
    assert queued(other) == []


def test_a_new_cluster_subscriber_gets_the_current_state_once() -> None:
    live = channel(FakeCluster())
    client = _Client(websocket=None)  # type: ignore[arg-type]
    subscribe = '{"type": "subscribe", "topics": ["cluster"], "request_id": "s"}'
    first = asyncio.run(live.replies(client, subscribe))
    assert [m["type"] for m in first] == [
        "subscribed",
        "cluster_status_update",
        "leadership_update",
    ]
    assert first[1]["mode"] == "cluster" and first[2]["leader"]["epoch"] == 3
    again = asyncio.run(live.replies(client, subscribe))
    assert [m["type"] for m in again] == ["subscribed"]


def test_get_cluster_status_is_answered_with_the_status_json() -> None:
    live = channel(FakeCluster())
    client = _Client(websocket=None)  # type: ignore[arg-type]
    [reply] = asyncio.run(live.replies(client, '{"type": "get_cluster_status", "request_id": "g"}'))
    assert (reply["type"], reply["request_id"], reply["name"]) == ("cluster_status", "g", "c")
    assert reply["leader"]["epoch"] == 3
