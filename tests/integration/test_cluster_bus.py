"""ClusterBus instances, as several coordinators would run them, on real etcd members.

Each test uses a cluster name of its own on one shared three-member etcd
cluster, except the one that kills a member, which starts its own. The leader
key is written by hand here (as the election would) to get fencing epochs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from uuid import uuid4

import msgspec
import pytest

from dtf.cluster.bus import ClusterBus
from dtf.cluster.etcd import Etcd, EtcdSettings
from dtf.cluster.log import EtcdLog, LogCompacted, NotLeader
from dtf.core import commands as c
from dtf.core.events import AssignTask, Event, TaskAccepted
from dtf.errors import CoordinatorUnavailable
from dtf.testing.etcd import EtcdCluster, require_etcd
from dtf.testing.factories import capabilities, task_spec

pytestmark = pytest.mark.integration

WAIT_S = 30.0
Fence = Callable[[], int | None]


def no_leader() -> int | None:
    return None


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    require_etcd()
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), size=3) as cluster:
        cluster.wait_healthy(20.0)
        yield cluster


def run(scenario: Awaitable[None]) -> None:
    async def main() -> None:
        await asyncio.wait_for(scenario, 90.0)

    asyncio.run(main())


class Node:
    """One coordinator's bus on its own etcd connection, with the events it published."""

    def __init__(self, bus: ClusterBus) -> None:
        self.bus = bus
        self.accepted: Counter[str] = Counter()
        self.assigned: list[str] = []
        bus.subscribe(self.on_events)

    def on_events(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, TaskAccepted) and not event.duplicate:
                self.accepted[event.task_id] += 1
            elif isinstance(event, AssignTask):
                self.assigned.append(event.task_id)


@asynccontextmanager
async def nodes(
    settings: EtcdSettings,
    cluster: str,
    count: int,
    *,
    snapshot_every: int = 10_000,
    fences: list[Fence] | None = None,
) -> AsyncIterator[list[Node]]:
    """``count`` started buses; node ``i`` talks to etcd member ``i`` first."""
    async with AsyncExitStack() as stack:
        started: list[Node] = []
        for index in range(count):
            endpoints = settings.endpoints[index:] + settings.endpoints[:index]
            etcd = await Etcd.connect(replace(settings, endpoints=endpoints))
            stack.push_async_callback(etcd.close)
            fence = fences[index] if fences else no_leader
            bus = await ClusterBus.recover(
                EtcdLog(etcd, cluster), snapshot_every=snapshot_every, fence=fence
            )
            node = Node(bus)
            bus.start()
            stack.push_async_callback(bus.stop)
            started.append(node)
        yield started


async def become_leader(log: EtcdLog, node_id: str) -> int:
    """Write the leader key as a new term would; its create revision is the epoch."""
    await log.etcd.delete_prefix(log.keys.leader)
    record = {"node_id": node_id, "url": f"http://127.0.0.1:9/{node_id}", "epoch": 0}
    await log.etcd.put(log.keys.leader, msgspec.json.encode(record))
    leader = await log.etcd.get(log.keys.leader)
    assert leader is not None
    return leader.create_revision


def submit(task_id: str) -> c.SubmitTasks:
    return c.SubmitTasks(time.time(), [c.NewTask(task_id, task_spec())])


def register(worker_id: str, slots: int) -> c.RegisterWorker:
    return c.RegisterWorker(time.time(), worker_id, "s1", capabilities(), slots)


async def submit_retrying(bus: ClusterBus, task_id: str) -> list[Event]:
    """A client's submit: retried when the coordinator cannot say whether it applied."""
    for _ in range(50):
        try:
            return await bus.execute(submit(task_id))
        except CoordinatorUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} was never accepted")


async def in_step(group: list[Node]) -> int:
    """Wait until every node applied the whole log; the tail."""
    tail = await group[0].bus.log.tail()
    for node in group:
        await node.bus.wait_applied(tail, WAIT_S)
    return tail


def test_two_coordinators_appending_at_once_reach_the_same_state(
    etcd_cluster: EtcdCluster,
) -> None:
    async def client(node: Node, name: str) -> None:
        for index in range(25):
            task_id = f"{name}-{index}"
            events = await node.bus.execute(submit(task_id))
            assert [e.task_id for e in events if isinstance(e, TaskAccepted)] == [task_id]

    async def scenario() -> None:
        async with nodes(etcd_cluster.settings(), f"t{uuid4().hex[:8]}", 2) as (a, b):
            await a.bus.execute(register("w1", slots=8))
            clients = [
                client(node, f"{node_name}{k}")
                for node_name, node in (("a", a), ("b", b))
                for k in range(3)
            ]
            await asyncio.gather(*clients)
            tail = await in_step([a, b])
            entries, _ = await a.bus.log.read(0)
            assert [seq for seq, _ in entries] == list(range(1, tail + 1))
            assert a.bus.applied_seq == b.bus.applied_seq == tail
            assert a.bus.state.snapshot() == b.bus.state.snapshot()
            submitted = {f"{n}{k}-{i}" for n in "ab" for k in range(3) for i in range(25)}
            assert set(a.accepted) == set(b.accepted) == submitted
            assert set(a.accepted.values()) == set(b.accepted.values()) == {1}
            assert a.assigned == b.assigned
            assert len(a.assigned) == 8

    run(scenario())


def test_leader_only_commands_need_the_current_epoch(etcd_cluster: EtcdCluster) -> None:
    epochs: dict[str, int | None] = {"a": None}

    async def scenario() -> None:
        fences: list[Fence] = [lambda: epochs["a"], no_leader]
        async with nodes(etcd_cluster.settings(), f"t{uuid4().hex[:8]}", 2, fences=fences) as (
            a,
            b,
        ):
            with pytest.raises(NotLeader, match="Tick refused"):
                b.bus.enqueue(c.Tick(time.time()))
            epochs["a"] = await become_leader(a.bus.log, "coord-a")
            await a.bus.execute(c.Tick(time.time()))
            await a.bus.execute(c.CoordinatorStarted(time.time()))
            await become_leader(a.bus.log, "coord-b")
            with pytest.raises(NotLeader, match="the leader is coord-b") as refused:
                await a.bus.execute(c.Tick(time.time()))
            assert refused.value.status_code == 409
            with pytest.raises(NotLeader, match="the leader is coord-b"):
                await a.bus.execute(c.CoordinatorNodeLost(time.time(), "coord-c"))
            await a.bus.execute(submit("after-the-term"))
            tail = await in_step([a, b])
            assert tail == 3
            assert a.bus.state.snapshot() == b.bus.state.snapshot()

    run(scenario())


def test_a_new_coordinator_starts_from_the_snapshot_and_the_tail(
    etcd_cluster: EtcdCluster,
) -> None:
    name = f"t{uuid4().hex[:8]}"
    epochs: dict[str, int | None] = {"a": None}

    async def wait_for_snapshot(log: EtcdLog, at_least: int) -> int:
        while True:
            snapshot = await log.load_snapshot()
            if snapshot is not None and snapshot[0] >= at_least:
                return snapshot[0]
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        fences: list[Fence] = [lambda: epochs["a"], no_leader]
        async with nodes(etcd_cluster.settings(), name, 2, snapshot_every=10, fences=fences) as (
            a,
            b,
        ):
            epochs["a"] = await become_leader(a.bus.log, "coord-a")
            await a.bus.execute(register("w1", slots=2))
            for index in range(30):
                await (a if index % 2 else b).bus.execute(submit(f"task-{index}"))
            snapshot_seq = await asyncio.wait_for(wait_for_snapshot(a.bus.log, 20), WAIT_S)
            await b.bus.execute(submit("after-the-snapshot"))
            tail = await in_step([a, b])
            assert snapshot_seq < tail
            with pytest.raises(LogCompacted):
                await a.bus.log.read(0)
            async with nodes(etcd_cluster.settings(), name, 1) as (late,):
                assert late.bus.applied_seq == tail
                assert late.bus.state.snapshot() == a.bus.state.snapshot()
                await late.bus.execute(submit("from-the-late-one"))
                await in_step([a, b, late])
                assert late.bus.state.snapshot() == a.bus.state.snapshot()

    run(scenario())


def test_the_log_keeps_flowing_after_an_etcd_member_is_killed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    require_etcd()

    async def scenario(cluster: EtcdCluster) -> None:
        async with nodes(cluster.settings(), "kill", 2) as (a, b):
            await a.bus.execute(register("w1", slots=4))
            for index in range(5):
                await submit_retrying(b.bus, f"before-{index}")
            await in_step([a, b])
            cluster.kill(cluster.client_urls.index(a.bus.log.etcd.endpoint))
            for index in range(5):
                await submit_retrying(b.bus, f"from-b-{index}")
                await submit_retrying(a.bus, f"from-a-{index}")
            await in_step([a, b])
            assert a.bus.state.snapshot() == b.bus.state.snapshot()
            assert len(a.bus.state.tasks) == 15
            assert set(a.accepted.values()) == {1}
            assert a.assigned == b.assigned

    with EtcdCluster(tmp_path_factory.mktemp("etcd-kill"), size=3) as cluster:
        cluster.wait_healthy(20.0)
        run(scenario(cluster))


def test_a_follower_cut_off_past_a_snapshot_jumps_to_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    require_etcd()
    epochs: dict[str, int | None] = {"a": None}

    async def scenario(cluster: EtcdCluster) -> None:
        settings = cluster.settings()
        lonely = replace(settings, endpoints=settings.endpoints[2:])
        async with nodes(settings, "behind", 1, snapshot_every=5, fences=[lambda: epochs["a"]]) as (
            a,
        ):
            epochs["a"] = await become_leader(a.bus.log, "coord-a")
            await a.bus.execute(register("w1", slots=2))
            async with nodes(lonely, "behind", 1) as (b,):
                state = b.bus.state
                await in_step([a, b])
                cluster.kill(2)
                for index in range(20):
                    await a.bus.execute(submit(f"task-{index}"))
                snapshot = await a.bus.log.load_snapshot()
                assert snapshot is not None
                with pytest.raises(LogCompacted):
                    await a.bus.log.read(b.bus.applied_seq)
                cluster.restart(2)
                await in_step([a, b])
                assert b.bus.state is state
                assert b.bus.state.snapshot() == a.bus.state.snapshot()
                await b.bus.execute(submit("from-b"))
                await in_step([a, b])
                assert b.bus.state.snapshot() == a.bus.state.snapshot()

    with EtcdCluster(tmp_path_factory.mktemp("etcd-behind"), size=3) as cluster:
        cluster.wait_healthy(20.0)
        run(scenario(cluster))
