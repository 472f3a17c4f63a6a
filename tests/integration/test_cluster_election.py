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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from dtf.cluster.election import DISABLED, SHUTDOWN, Election
from dtf.cluster.etcd import Etcd, EtcdSettings, EtcdUnavailable
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


async def one_leader(
    nodes: list[Election], what: str, *, among: list[Election] | None = None
) -> Election:
    """Wait until one of ``nodes`` leads, one ``among`` those given if any; fail if two
    ever lead at once meanwhile."""

    def has_one() -> bool:
        leading = [node for node in nodes if node.is_leader]
        assert len(leading) <= 1, f"two leaders at once: {[n.node_id for n in leading]}"
        return len(leading) == 1 and (among is None or leading[0] in among)

    await eventually(has_one, what)
    return next(node for node in nodes if node.is_leader)


@contextlib.asynccontextmanager
async def cluster_of(
    settings: list[EtcdSettings], name: str, *, first: int = 0, with_members: bool = False
) -> AsyncIterator[tuple[list[Election], list[Members]]]:
    """One started Election (and Members, wired to it) per etcd settings, ids from ``first``."""
    clients = [await Etcd.connect(each) for each in settings]
    nodes: list[Election] = []
    members: list[Members] = []
    for index, client in enumerate(clients, start=first):
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


def test_clean_resign_hands_over_at_once(etcd_cluster: EtcdCluster, name: str) -> None:
    async def scenario() -> None:
        async with cluster_of([etcd_cluster.settings()] * 3, name) as (nodes, _):
            old = await one_leader(nodes, "a first leader")
            old_epoch = old.fence()
            await wait_for_history(old, 1)
            stopped_at = time.monotonic()
            await old.stop()
            assert old.fence() is None
            new = await one_leader([n for n in nodes if n is not old], "a successor")
            print(f"\nresigned leader replaced after {time.monotonic() - stopped_at:.3f}s")
            history = await wait_for_history(new, 2)
            assert (history[1].epoch, history[1].end_reason) == (old_epoch, SHUTDOWN)

    asyncio.run(scenario())


def test_leader_cut_off_from_etcd_fences_itself_before_a_successor_is_elected(
    etcd_cluster: EtcdCluster, name: str
) -> None:
    """The leader talks to member 0 only; killing that member cuts it off from etcd."""
    urls = etcd_cluster.client_urls
    only_first = EtcdSettings(endpoints=(urls[0],), timeout_s=0.5)
    the_others = EtcdSettings(endpoints=tuple(urls[1:]))

    async def scenario() -> None:
        async with cluster_of([only_first], name) as ([cut_off], _):
            await one_leader([cut_off], "the soon cut-off node to lead")
            async with cluster_of([the_others] * 2, name, first=1) as (rest, _):
                await eventually(
                    lambda: all(node.leader == cut_off.leader for node in rest),
                    "the others to follow the first leader",
                )
                etcd_cluster.kill(0)
                try:

                    def is_fenced_when_replaced() -> bool:
                        is_replaced = any(node.is_leader for node in rest)
                        assert not (is_replaced and cut_off.fence() is not None), (
                            "a successor was elected while the cut-off leader's fence held"
                        )
                        return is_replaced

                    await eventually(is_fenced_when_replaced, "a successor")
                    assert cut_off.leader is None
                finally:
                    etcd_cluster.restart(0)
        await asyncio.to_thread(etcd_cluster.wait_healthy, 20.0)

    asyncio.run(scenario())


def test_disabled_leader_resigns_and_disabled_nodes_never_campaign(
    etcd_cluster: EtcdCluster, name: str
) -> None:
    async def scenario() -> None:
        settings = [etcd_cluster.settings()] * 3
        async with cluster_of(settings, name, with_members=True) as (nodes, members):
            first = await one_leader(nodes, "a first leader")
            await members[0].set_enabled(first.node_id, False, "kernel upgrade")
            second = await one_leader(
                nodes, "a second leader", among=[n for n in nodes if n is not first]
            )
            history = await wait_for_history(second, 2)
            assert (history[1].node_id, history[1].end_reason) == (first.node_id, DISABLED)
            assert await members[1].is_disabled(first.node_id)
            listed = {node.node_id: node for node in await members[2].nodes(log_seq=25)}
            assert listed[first.node_id].disabled_reason == "kernel upgrade"
            assert listed[second.node_id].role == "leader"
            assert {node_id: node.lag for node_id, node in listed.items()} == {
                "n0": 25,
                "n1": 15,
                "n2": 5,
            }

            await members[0].set_enabled(second.node_id, False, "disk swap")
            [third] = [node for node in nodes if node not in (first, second)]
            await one_leader(nodes, "the only enabled node to lead", among=[third])
            await third.stop()
            await eventually(
                lambda: all(node.leader is None for node in (first, second)),
                "the disabled nodes to see the leader gone",
            )
            await asyncio.sleep(3 * first.ttl_s)
            assert not (first.is_leader or second.is_leader)

            await members[0].set_enabled(first.node_id, True, "upgrade done")
            assert await one_leader([first, second], "the enabled node to lead") is first

    asyncio.run(scenario())


def test_a_leader_exists_after_the_etcd_leader_member_is_killed(
    etcd_cluster: EtcdCluster, name: str
) -> None:
    async def scenario() -> None:
        async with cluster_of([etcd_cluster.settings()] * 3, name) as (nodes, _):
            before = (await one_leader(nodes, "a first leader")).leader
            etcd_leader = await etcd_cluster.leader_index()
            killed_at = time.monotonic()
            etcd_cluster.kill(etcd_leader)
            try:
                await eventually_async(
                    lambda: etcd_leader_other_than(etcd_cluster, etcd_leader),
                    "etcd to elect another leader member",
                )
                leader = await one_leader(nodes, "a leader after the etcd leader died")
                await eventually(
                    lambda: all(node.leader == leader.leader for node in nodes),
                    "every node to know the leader",
                )
                kept = "kept" if leader.leader == before else "changed"
                print(
                    f"\netcd leader killed: leader {kept}, agreed after {time.monotonic() - killed_at:.3f}s"
                )
            finally:
                etcd_cluster.restart(etcd_leader)
        await asyncio.to_thread(etcd_cluster.wait_healthy, 20.0)

    asyncio.run(scenario())


async def etcd_leader_other_than(cluster: EtcdCluster, index: int) -> bool:
    try:
        return await cluster.leader_index() != index
    except EtcdUnavailable:
        return False


async def eventually_async(
    condition: Callable[[], Awaitable[bool]], what: str, within_s: float = WAIT_S
) -> None:
    deadline = time.monotonic() + within_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within_s:g}s waiting for {what}")
        await asyncio.sleep(0.05)


def test_registry_lists_live_nodes_with_their_applied_position(
    etcd_cluster: EtcdCluster, name: str
) -> None:
    async def scenario() -> None:
        settings = [etcd_cluster.settings()] * 2
        async with cluster_of(settings, name, with_members=True) as (_, members):
            await eventually_async(
                lambda: listed_positions(members[0], {"n0": 0, "n1": 10}),
                "both nodes to be listed at their applied positions",
            )
            await members[1].stop()
            assert [node.node_id for node in await members[0].nodes()] == ["n0"]

    asyncio.run(scenario())


async def listed_positions(members: Members, expected: dict[str, int]) -> bool:
    return {node.node_id: node.applied_seq for node in await members.nodes()} == expected


def test_the_registry_names_each_node_process_and_forgets_a_node_that_left(
    etcd_cluster: EtcdCluster, name: str
) -> None:
    async def scenario() -> None:
        settings = [etcd_cluster.settings()] * 2
        async with cluster_of(settings, name, with_members=True) as (_, members):
            watcher, leaving = members
            both = {"n0": watcher.incarnation, "n1": leaving.incarnation}
            await eventually(lambda: watcher.listed == both, "both nodes to be listed")
            assert await watcher.registry() == both
            await leaving.stop()
            await eventually(lambda: watcher.listed == {"n0": both["n0"]}, "n1 to be gone")
            assert await watcher.registry() == {"n0": both["n0"]}
            restarted = Members(
                leaving.etcd, name, "n1", leaving.url, ttl_s=2, applied_seq=lambda: 0
            )
            assert restarted.incarnation != leaving.incarnation
            await restarted.start()
            try:
                again = {"n0": both["n0"], "n1": restarted.incarnation}
                await eventually(lambda: watcher.listed == again, "n1 listed as a new process")
            finally:
                await restarted.stop()

    asyncio.run(scenario())
