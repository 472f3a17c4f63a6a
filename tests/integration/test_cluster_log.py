"""The etcd log against three real etcd members on loopback.

Each test uses a cluster name of its own, so they share one etcd cluster. The
leader key is written by hand here (as the election would) to get fencing epochs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from uuid import uuid4

import msgspec
import pytest

from dtf.cluster.etcd import Etcd, EtcdSettings
from dtf.cluster.log import (
    MAX_ENTRY_BYTES,
    MAX_VALUE_BYTES,
    EtcdLog,
    LogCompacted,
    LogKeys,
    NotLeader,
    TailMoved,
)
from dtf.errors import InvalidRequest
from dtf.testing.etcd import EtcdCluster, require_etcd

pytestmark = pytest.mark.integration

Scenario = Callable[[EtcdLog], Awaitable[None]]


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    require_etcd()
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), size=3) as cluster:
        cluster.wait_healthy(20.0)
        yield cluster


def run(cluster: EtcdCluster, scenario: Scenario) -> None:
    async def main() -> None:
        etcd = await Etcd.connect(cluster.settings())
        try:
            await asyncio.wait_for(scenario(EtcdLog(etcd, f"t{uuid4().hex[:8]}")), 60.0)
        finally:
            await etcd.close()

    asyncio.run(main())


async def become_leader(log: EtcdLog, node_id: str) -> int:
    """Write the leader key as a new term would; its create revision is the epoch."""
    await log.etcd.delete_prefix(log.keys.leader)
    record = {"node_id": node_id, "url": f"http://127.0.0.1:9/{node_id}", "epoch": 0}
    await log.etcd.put(log.keys.leader, msgspec.json.encode(record))
    leader = await log.etcd.get(log.keys.leader)
    assert leader is not None
    return leader.create_revision


def entry(index: int, size: int = 8) -> bytes:
    return index.to_bytes(4, "big") + os.urandom(size - 4)


def test_appends_are_ordered_by_the_tail_and_read_back(etcd_cluster: EtcdCluster) -> None:
    async def scenario(log: EtcdLog) -> None:
        assert await log.tail() == 0
        assert await log.append([entry(1), entry(2)], expected_tail=0, fence_epoch=None) == 2
        with pytest.raises(TailMoved) as moved:
            await log.append([entry(3)], expected_tail=0, fence_epoch=None)
        assert (moved.value.actual_tail, moved.value.appended) == (2, 0)
        assert await log.append([entry(3)], expected_tail=2, fence_epoch=None) == 3
        entries, _ = await log.read(0)
        assert [seq for seq, _ in entries] == [1, 2, 3]
        assert [data[:4] for _, data in entries] == [i.to_bytes(4, "big") for i in (1, 2, 3)]
        assert [seq for seq, _ in (await log.read(2))[0]] == [3]

    run(etcd_cluster, scenario)


def test_a_batch_over_one_mib_spans_several_keys(etcd_cluster: EtcdCluster) -> None:
    async def scenario(log: EtcdLog) -> None:
        big = [entry(i, 300_000) for i in range(1, 8)]
        assert await log.append(big, expected_tail=0, fence_epoch=None) == 7
        keys, _ = await log.etcd.get_prefix(log.keys.log_prefix)
        assert len(keys) == 3
        assert all(len(kv.value) <= MAX_VALUE_BYTES for kv in keys)
        entries, _ = await log.read(0)
        assert entries == list(enumerate(big, start=1))
        with pytest.raises(InvalidRequest, match="send it in smaller parts"):
            await log.append([b"x" * (MAX_ENTRY_BYTES + 1)], expected_tail=7, fence_epoch=None)

    run(etcd_cluster, scenario)


def test_fenced_appends_need_the_current_epoch(etcd_cluster: EtcdCluster) -> None:
    async def scenario(log: EtcdLog) -> None:
        with pytest.raises(NotLeader, match="no leader is known") as refused:
            await log.append([entry(1)], expected_tail=0, fence_epoch=1)
        assert refused.value.status_code == 503
        old_epoch = await become_leader(log, "coord-a")
        assert await log.append([entry(1)], expected_tail=0, fence_epoch=old_epoch) == 1
        new_epoch = await become_leader(log, "coord-b")
        with pytest.raises(NotLeader, match="the leader is coord-b") as refused:
            await log.append([entry(2)], expected_tail=1, fence_epoch=old_epoch)
        assert refused.value.status_code == 409
        assert refused.value.leader is not None
        assert refused.value.leader.epoch == new_epoch
        assert await log.append([entry(2)], expected_tail=1, fence_epoch=new_epoch) == 2
        assert await log.append([entry(3)], expected_tail=2, fence_epoch=None) == 3

    run(etcd_cluster, scenario)


def test_the_watch_delivers_appends_in_order_and_ignores_compaction(
    etcd_cluster: EtcdCluster,
) -> None:
    async def scenario(log: EtcdLog) -> None:
        await log.append([entry(1)], expected_tail=0, fence_epoch=None)
        _, revision = await log.read(0)
        seen: list[int] = []

        async def follow() -> None:
            async for entries in log.watch(revision):
                seen.extend(seq for seq, _ in entries)
                if seen[-1] == 5:
                    return

        watcher = asyncio.create_task(follow())
        await log.append([entry(2), entry(3)], expected_tail=1, fence_epoch=None)
        await log.save_snapshot(3, b"state at 3", fence_epoch=None)
        await log.append([entry(4)], expected_tail=3, fence_epoch=None)
        await log.append([entry(5)], expected_tail=4, fence_epoch=None)
        await asyncio.wait_for(watcher, 20.0)
        assert seen == [2, 3, 4, 5]

    run(etcd_cluster, scenario)


def test_snapshots_replace_the_log_they_cover(etcd_cluster: EtcdCluster) -> None:
    async def scenario(log: EtcdLog) -> None:
        assert await log.load_snapshot() is None
        for seq in range(1, 6):
            await log.append([entry(seq)], expected_tail=seq - 1, fence_epoch=None)
        state = os.urandom(2_500_000)
        assert await log.save_snapshot(3, state, fence_epoch=None) == 3
        assert await log.load_snapshot() == (3, state)
        with pytest.raises(LogCompacted, match="load the snapshot"):
            await log.read(0)
        assert [seq for seq, _ in (await log.read(3))[0]] == [4, 5]
        first_chunks, _ = await log.etcd.get_prefix(log.keys.snapshots_prefix)
        assert len(first_chunks) == 3

        assert await log.save_snapshot(5, b"state at 5", fence_epoch=None) == 5
        assert await log.save_snapshot(4, b"older", fence_epoch=None) == 5
        assert await log.load_snapshot() == (5, b"state at 5")
        chunks, _ = await log.etcd.get_prefix(log.keys.snapshots_prefix)
        assert len(chunks) == 1
        assert (await log.read(5))[0] == []
        with pytest.raises(LogCompacted):
            await log.read(4)

    run(etcd_cluster, scenario)


def test_a_snapshot_compacts_only_whole_batches(etcd_cluster: EtcdCluster) -> None:
    async def scenario(log: EtcdLog) -> None:
        await log.append([entry(1), entry(2), entry(3)], expected_tail=0, fence_epoch=None)
        await log.append([entry(4), entry(5)], expected_tail=3, fence_epoch=None)
        await log.save_snapshot(2, b"state at 2", fence_epoch=None)
        assert [seq for seq, _ in (await log.read(2))[0]] == [3, 4, 5]
        await log.save_snapshot(4, b"state at 4", fence_epoch=None)
        assert [seq for seq, _ in (await log.read(4))[0]] == [5]
        with pytest.raises(LogCompacted):
            await log.read(2)

    run(etcd_cluster, scenario)


def test_a_fenced_out_snapshot_is_refused_and_leaves_no_chunks(
    etcd_cluster: EtcdCluster,
) -> None:
    async def scenario(log: EtcdLog) -> None:
        old_epoch = await become_leader(log, "coord-a")
        await log.append([entry(1), entry(2)], expected_tail=0, fence_epoch=None)
        await become_leader(log, "coord-b")
        with pytest.raises(NotLeader, match="coord-b"):
            await log.save_snapshot(2, b"state at 2", fence_epoch=old_epoch)
        assert await log.load_snapshot() is None
        chunks, _ = await log.etcd.get_prefix(log.keys.snapshots_prefix)
        assert chunks == []
        assert [seq for seq, _ in (await log.read(0))[0]] == [1, 2]

    run(etcd_cluster, scenario)


def test_cluster_names_that_cannot_name_keys_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="cannot name etcd keys"):
        LogKeys.of("a/b")


def test_an_append_in_flight_when_the_etcd_leader_hangs_lands_exactly_once(
    etcd_cluster: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The append goes to a follower, which forwards it to a leader that hangs: the
    adapter abandons it when a new term starts, the log reads the batch key back (it is
    not there) and sends the same compare-on-tail transaction again to the new leader."""
    leader = asyncio.run(etcd_cluster.leader_index())
    urls = etcd_cluster.client_urls
    followers = tuple(url for index, url in enumerate(urls) if index != leader)

    async def main() -> None:
        etcd = await Etcd.connect(EtcdSettings(endpoints=followers, timeout_s=60.0))
        log = EtcdLog(etcd, f"t{uuid4().hex[:8]}")
        try:
            assert await log.append([b"a"], expected_tail=0, fence_epoch=None) == 1
            etcd_cluster.pause(leader)
            try:
                assert await log.append([b"b", b"c"], expected_tail=1, fence_epoch=None) == 3
            finally:
                etcd_cluster.resume(leader)
            entries, _ = await log.read(0)
            assert entries == [(1, b"a"), (2, b"b"), (3, b"c")]
            assert await log.tail() == 3
        finally:
            await etcd.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 90.0))
    finally:
        etcd_cluster.wait_healthy(20.0)
    assert any("abandoned" in record.getMessage() for record in caplog.records)
