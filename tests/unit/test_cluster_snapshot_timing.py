"""When a cluster node snapshots: a follower knows only the snapshot it started
from, so once it leads it asks for the published one before writing another."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import cast

import pytest

from dtf.cluster.etcd import Etcd
from dtf.cluster.log import EtcdLog
from dtf.cluster.log_applier import LogApplier
from dtf.cluster.pending import PendingCommands
from dtf.core import commands as c
from dtf.core.state import State

SNAPSHOT_EVERY = 4


class _PublishedSnapshots(EtcdLog):
    """A stand-in log holding one published snapshot seq; records each save."""

    def __init__(self, published_seq: int) -> None:
        super().__init__(cast(Etcd, None), "unit")
        self.published = published_seq
        self.saved: list[int] = []

    async def published_snapshot_seq(self) -> int:
        return self.published

    async def save_snapshot(self, seq: int, data: bytes, *, fence_epoch: int | None) -> int:
        assert State.restore(data).applied_seq == seq
        self.saved.append(seq)
        self.published = seq
        return seq


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def leader_started_from_seq_0(log: EtcdLog) -> LogApplier:
    return LogApplier(
        log,
        State(),
        PendingCommands(),
        revision=0,
        snapshot_seq=0,
        snapshot_every=SNAPSHOT_EVERY,
        fence=lambda: 1,
    )


def apply_ticks(loop: asyncio.AbstractEventLoop, node: LogApplier, seqs: range) -> None:
    async def run() -> None:
        for seq in seqs:
            node.apply_entries([(seq, c.encode(c.Tick(float(seq))))])
            if node._snapshotting is not None:
                await node._snapshotting

    loop.run_until_complete(asyncio.wait_for(run(), 10))


def test_a_new_leader_does_not_snapshot_again_what_another_just_published(
    loop: asyncio.AbstractEventLoop,
) -> None:
    log = _PublishedSnapshots(published_seq=5)
    node = leader_started_from_seq_0(log)
    apply_ticks(loop, node, range(1, 9))
    assert log.saved == []
    apply_ticks(loop, node, range(9, 10))
    assert log.saved == [9]


def test_a_leader_snapshots_when_the_published_one_is_old(
    loop: asyncio.AbstractEventLoop,
) -> None:
    log = _PublishedSnapshots(published_seq=0)
    node = leader_started_from_seq_0(log)
    apply_ticks(loop, node, range(1, 10))
    assert log.saved == [4, 8]
