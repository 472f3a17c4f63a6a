"""The leader's lost-node check (``ClusterNode``) and the loops it relies on,
against in-memory stand-ins for etcd, the election, the registry and the bus:
what it journals, and that no error ends it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from dtf.cluster.etcd import EtcdSettings, EtcdUnavailable
from dtf.cluster.loops import keep_doing
from dtf.cluster.members import Members
from dtf.cluster.node import ClusterNode
from dtf.cluster.settings import ClusterSettings
from dtf.core import commands as c
from dtf.core.model import Capabilities
from dtf.core.state import State
from dtf.errors import CoordinatorUnavailable

ME = ("n0", "i0")


@dataclass
class FakeMembers:
    listed: dict[str, str] | None
    fresh: dict[str, str]
    incarnation: str = ME[1]
    reads: int = 0

    async def wait_nodes_changed(self, timeout_s: float) -> None:
        await asyncio.sleep(0)

    async def registry(self) -> dict[str, str]:
        self.reads += 1
        return dict(self.fresh)

    async def stop(self) -> None:
        pass


@dataclass
class FakeElection:
    is_leader: bool = True

    async def stop(self, *, resign: bool) -> None:
        pass


@dataclass
class FakeBus:
    state: State = field(default_factory=State)
    journaled: list[c.Command] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)

    async def execute(self, command: c.Command) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.journaled.append(command)
        self.state.apply(command)

    async def stop(self) -> None:
        pass


class Stoppable:
    async def stop(self) -> None:
        pass

    async def close(self) -> None:
        pass


def cluster_node(members: FakeMembers, bus: FakeBus, election: FakeElection) -> ClusterNode:
    settings = ClusterSettings(
        "c", ME[0], "http://127.0.0.1:1", EtcdSettings.parse("http://127.0.0.1:2")
    )
    fake: Any = Stoppable()
    node: Any = ClusterNode(settings, fake, bus, election, members, fake)  # type: ignore[arg-type]
    return node  # type: ignore[no-any-return]


def registered(bus: FakeBus, worker_id: str, node_id: str, incarnation: str) -> None:
    bus.state.apply(
        c.RegisterWorker(
            0.0,
            worker_id,
            "s1",
            Capabilities(),
            1,
            node_id=node_id,
            node_incarnation=incarnation,
        )
    )


def lost(bus: FakeBus) -> list[tuple[str, str]]:
    return [
        (command.node_id, command.node_incarnation)
        for command in bus.journaled
        if isinstance(command, c.CoordinatorNodeLost)
    ]


# (the watch's view, the registry read afresh, workers (id, node, incarnation), journaled)
CHECKS = [
    # a leader that started after n1 vanished: n1 was never seen leaving
    ({"n0": "i0"}, {"n0": "i0"}, [("w1", "n1", "a")], [("n1", "a")]),
    # the watch lags: n2 started and registered a worker; the fresh read lists it
    ({"n0": "i0"}, {"n0": "i0", "n2": "a"}, [("w1", "n2", "a")], []),
    # n1 restarted under its id: only the workers of its old process are stranded
    ({"n1": "b"}, {"n1": "b"}, [("w1", "n1", "a"), ("w2", "n1", "b")], [("n1", "a")]),
    # this node's own record missing for a moment: never lost to itself
    ({}, {}, [("w1", "n0", "i0")], []),
]


@pytest.mark.parametrize(("listed", "fresh", "workers", "expected"), CHECKS)
def test_the_leader_journals_what_the_registry_no_longer_lists(
    listed: dict[str, str],
    fresh: dict[str, str],
    workers: list[tuple[str, str, str]],
    expected: list[tuple[str, str]],
) -> None:
    members, bus = FakeMembers(listed, fresh), FakeBus()
    for worker in workers:
        registered(bus, *worker)
    asyncio.run(cluster_node(members, bus, FakeElection())._check_lost_nodes())
    assert lost(bus) == expected


def test_a_follower_or_a_node_that_has_not_listed_the_registry_journals_nothing() -> None:
    for members, election in [
        (FakeMembers({}, {}), FakeElection(is_leader=False)),
        (FakeMembers(None, {}), FakeElection()),
    ]:
        bus = FakeBus()
        registered(bus, "w1", "n1", "a")
        asyncio.run(cluster_node(members, bus, election)._check_lost_nodes())
        assert (lost(bus), members.reads) == ([], 0)


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(5.0):
        while not condition():
            await asyncio.sleep(0.001)


def run_checks(bus: FakeBus, scenario: Callable[[ClusterNode], Awaitable[None]]) -> None:
    registered(bus, "w1", "n1", "a")
    node = cluster_node(FakeMembers({}, {}), bus, FakeElection())

    async def main() -> None:
        node._lost_nodes = asyncio.create_task(node._declare_lost_nodes())
        await scenario(node)

    asyncio.run(main())


def test_an_unexpected_error_does_not_end_the_checks(caplog: pytest.LogCaptureFixture) -> None:
    bus = FakeBus(failures=[RuntimeError("a bug")])

    async def scenario(node: ClusterNode) -> None:
        await until(lambda: lost(bus) == [("n1", "a")], "n1 to be journaled lost")
        await node.stop()

    run_checks(bus, scenario)
    assert any("a bug" in (r.exc_text or "") for r in caplog.records)


def test_a_writer_that_keeps_refusing_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    bus = FakeBus(failures=[CoordinatorUnavailable("the log writer is closed")] * 5)

    async def scenario(node: ClusterNode) -> None:
        await until(lambda: lost(bus) == [("n1", "a")], "n1 to be journaled lost")
        await node.stop()

    with caplog.at_level(logging.DEBUG, logger="dtf.cluster.node"):
        run_checks(bus, scenario)
    refusals = [r for r in caplog.records if "writer is closed" in r.getMessage()]
    assert [r.levelno for r in refusals] == [logging.WARNING] + [logging.DEBUG] * 4


def test_stop_waits_for_the_checks_to_end() -> None:
    async def scenario(node: ClusterNode) -> None:
        await asyncio.sleep(0)
        await node.stop()
        assert node._lost_nodes is not None and node._lost_nodes.done()

    run_checks(FakeBus(), scenario)


def test_keep_doing_goes_on_after_an_unexpected_error(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    async def step() -> float:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("a bug in the step")
        return 0.0

    async def main() -> None:
        task = asyncio.create_task(keep_doing(step, what="the step", retry_s=lambda _: 0.0))
        await until(lambda: len(calls) >= 3, "the step to run on")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert any("the step failed unexpectedly" in r.getMessage() for r in caplog.records)


class UnreachableEtcd:
    async def grant_lease(self, ttl_s: int) -> int:
        raise EtcdUnavailable("no etcd endpoint answers")


def test_a_node_that_cannot_write_its_record_does_not_start() -> None:
    etcd: Any = UnreachableEtcd()
    members = Members(etcd, "c", "n0", "http://127.0.0.1:1", ttl_s=3, applied_seq=lambda: 0)
    with pytest.raises(CoordinatorUnavailable, match="could not write its record") as raised:
        asyncio.run(members.start(register_within_s=0.0))
    assert "no etcd endpoint answers" in raised.value.message
