"""Leader election on a real three-member etcd cluster on loopback.

Each ``Election`` gets an etcd client of its own, as separate coordinator
processes would; a "killed" leader stops without resigning, so its lease is
left to expire as after kill -9. Every test uses its own cluster name, so they
share one etcd cluster without seeing each other's keys. Failover times are
printed (run with ``-s``), never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from dtf.cluster.election import DISABLED, SHUTDOWN, Election
from dtf.cluster.etcd import Etcd, EtcdSettings
from dtf.cluster.history import EXPIRED
from dtf.cluster.members import Members
from dtf.cluster.view import LeaderTerm
from dtf.testing.etcd import EtcdCluster, require_etcd

pytestmark = pytest.mark.integration

WAIT_S = 15.0


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    require_etcd()
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), size=3) as cluster:
        cluster.wait_healthy(20.0)
        yield cluster


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    return request.node.name.replace("_", "-")[:60]


async def eventually(condition: Callable[[], bool], what: str, within_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within_s:g}s waiting for {what}")
        await asyncio.sleep(0.01)


async def one_leader(nodes: list[Election], what: str) -> Election:
    """Wait for a leader among ``nodes``; fail if two ever lead at once meanwhile."""

    def has_one() -> bool:
        leading = [node for node in nodes if node.is_leader]
        assert len(leading) <= 1, f"two leaders at once: {[n.node_id for n in leading]}"
        return len(leading) == 1

    await eventually(has_one, what)
    return next(node for node in nodes if node.is_leader)


@contextlib.asynccontextmanager
async def cluster_of(
    settings: list[EtcdSettings], name: str, *, with_members: bool = False
) -> AsyncIterator[tuple[list[Election], list[Members]]]:
    """One started Election (and Members, wired to it) per etcd settings given."""
    clients = [await Etcd.connect(each) for each in settings]
    nodes: list[Election] = []
    members: list[Members] = []
    for index, client in enumerate(clients):
        node = Election(client, name, f"n{index}", f"http://127.0.0.1:{18000 + index}")
        nodes.append(node)
        if with_members:
            members.append(
                Members(
                    client,
                    name,
                    node.node_id,
                    node.url,
                    ttl_s=2,
                    applied_seq=lambda index=index: 10 * index,
                    on_disabled=node.set_disabled,
                )
            )
    try:
        for part in [*members, *nodes]:
            await part.start()
        yield nodes, members
    finally:
        for part in [*nodes, *members]:
            await part.stop()
        for client in clients:
            await client.close()


def test_exactly_one_leader_and_every_node_knows_it(etcd_cluster: EtcdCluster, name: str) -> None:
    async def scenario() -> None:
        async with cluster_of([etcd_cluster.settings()] * 3, name) as (nodes, _):
            leader = await one_leader(nodes, "a first leader")
            await eventually(
                lambda: all(node.leader == leader.leader for node in nodes),
                "every node to know the leader",
            )
            epoch = leader.fence()
            assert epoch is not None and leader.leader is not None
            assert leader.leader.epoch == epoch
            assert [node.fence() for node in nodes if node is not leader] == [None, None]
            history = await wait_for_history(leader, 1)
            assert [(t.epoch, t.node_id, t.ended_at) for t in history] == [
                (epoch, leader.node_id, None)
            ]

    asyncio.run(scenario())


def test_killed_leader_is_replaced_and_its_term_ends_lease_expired(
    etcd_cluster: EtcdCluster, name: str
) -> None:
    async def scenario() -> None:
        async with cluster_of([etcd_cluster.settings()] * 3, name) as (nodes, _):
            old = await one_leader(nodes, "a first leader")
            old_epoch = old.fence()
            killed_at = time.monotonic()
            await old.stop(resign=False)
            rest = [node for node in nodes if node is not old]
            new = await one_leader(rest, "a successor to the killed leader")
            print(f"\nkilled leader replaced after {time.monotonic() - killed_at:.3f}s")
            assert old_epoch is not None
            assert (new.fence() or 0) > old_epoch
            history = await wait_for_history(new, 2)
            assert (history[1].epoch, history[1].end_reason) == (old_epoch, EXPIRED)
            assert history[0].epoch == new.fence() and history[0].ended_at is None

    asyncio.run(scenario())


async def wait_for_history(node: Election, terms: int) -> list[LeaderTerm]:
    """The history once it holds ``terms`` terms, all but the newest closed."""
    deadline = time.monotonic() + WAIT_S
    while True:
        history = await node.history()
        if len(history) >= terms and all(term.ended_at for term in history[1:]):
            return history
        if time.monotonic() > deadline:
            raise AssertionError(f"history still {history} after {WAIT_S}s")
        await asyncio.sleep(0.02)
