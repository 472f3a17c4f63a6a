"""Lease refreshes over one kept-open keep-alive stream per lease, against real etcd.

etcd counts the streams it was asked to open in its own Prometheus metrics
(``grpc_server_started_total`` for ``LeaseKeepAlive``), which is how these tests
see that refreshes share one."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from dtf.cluster.etcd import Etcd, EtcdSettings
from dtf.testing.etcd import EtcdCluster, require_etcd, run_on_etcd

pytestmark = pytest.mark.integration

STARTED = re.compile(
    r'^grpc_server_started_total\{grpc_method="LeaseKeepAlive"[^}]*\} (\d+)', re.MULTILINE
)


def keep_alive_streams(endpoint: str) -> int:
    """How many LeaseKeepAlive streams the member at ``endpoint`` has been asked to open."""
    text = httpx.get(f"{endpoint}/metrics", timeout=5.0).text
    return sum(int(count) for count in STARTED.findall(text))


def test_refreshes_of_one_lease_share_one_stream_and_keep_it_alive(single: EtcdCluster) -> None:
    async def scenario(etcd: Etcd) -> None:
        lease = await etcd.grant_lease(2)
        await etcd.put(b"/k", b"alive", lease=lease)
        before = keep_alive_streams(etcd.endpoint)
        for _ in range(12):  # 3 s: past the 2 s TTL
            assert 0 < await etcd.refresh_lease(lease) <= 2
            await asyncio.sleep(0.25)
        assert keep_alive_streams(etcd.endpoint) - before == 1
        assert await etcd.get(b"/k") is not None
        other = await etcd.grant_lease(30)
        assert await etcd.refresh_lease(other) > 0
        assert keep_alive_streams(etcd.endpoint) - before == 2
        await etcd.revoke_lease(lease)
        assert await etcd.refresh_lease(lease) == 0

    run_on_etcd(single.settings(), scenario)


def test_a_refresh_cancelled_midway_leaves_no_stale_reply_behind(single: EtcdCluster) -> None:
    """The cancelled refresh's reply (a live TTL) must not answer the next refresh,
    asked after another client revoked the lease."""

    async def scenario(etcd: Etcd) -> None:
        lease = await etcd.grant_lease(30)
        await etcd.refresh_lease(lease)
        refreshing = asyncio.create_task(etcd.refresh_lease(lease))
        for _ in range(3):  # the request is written; its reply not yet read
            await asyncio.sleep(0)
        refreshing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await refreshing
        other = await Etcd.connect(single.settings())
        try:
            await other.revoke_lease(lease)
        finally:
            await other.close()
        assert await etcd.refresh_lease(lease) == 0

    run_on_etcd(single.settings(), scenario)


def test_a_refresh_moves_to_another_member_when_the_one_in_use_dies(trio: EtcdCluster) -> None:
    leader = asyncio.run(trio.leader_index())
    first = (leader + 1) % 3
    urls = trio.client_urls
    settings = EtcdSettings(endpoints=(urls[first], *(url for url in urls if url != urls[first])))

    async def scenario(etcd: Etcd) -> None:
        lease = await etcd.grant_lease(30)
        assert await etcd.refresh_lease(lease) > 0
        trio.kill(first)
        assert await etcd.refresh_lease(lease) > 0
        assert etcd.endpoint != urls[first]
        assert await etcd.refresh_lease(lease) > 0

    run_on_etcd(settings, scenario)


def test_a_refresh_after_the_member_restarted_opens_a_new_stream(tmp_path: Path) -> None:
    """etcd ends an idle kept stream when its member restarts; the next refresh must
    not fail on it but ask on a new stream."""
    require_etcd()
    with EtcdCluster(tmp_path / "etcd") as cluster:
        cluster.wait_healthy(20.0)

        async def scenario(etcd: Etcd) -> None:
            lease = await etcd.grant_lease(60)
            assert await etcd.refresh_lease(lease) > 0
            cluster.kill(0)
            cluster.restart(0)
            await asyncio.to_thread(cluster.wait_healthy, 20.0)
            await asyncio.sleep(1.0)  # the restarted member has ended the old stream
            assert 0 < await etcd.refresh_lease(lease) <= 60

        run_on_etcd(cluster.settings(), scenario)
