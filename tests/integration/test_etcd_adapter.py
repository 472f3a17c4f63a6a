"""The etcd adapter against real etcd members on loopback.

Tests on the shared single member use key prefixes of their own; tests that kill
members get a three-member cluster of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from uuid import uuid4

import grpc  # type: ignore[import-untyped]
import pytest
from aetcd import rpc  # type: ignore[import-untyped]

from dtf.cluster.etcd import (
    Etcd,
    EtcdError,
    EtcdSettings,
    EtcdUnavailable,
    LeaseNotFound,
    WatchCompacted,
    WatchEvent,
    create_revision_equals,
    delete_op,
    get_op,
    put_op,
    value_equals,
    version_equals,
)
from dtf.testing.etcd import (
    SCENARIO_TIMEOUT_S,
    EtcdCluster,
    find_etcd,
    free_ports,
    require_etcd,
    run_on_etcd,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix() -> bytes:
    return f"/t{uuid4().hex[:8]}/".encode()


async def until(predicate: Callable[[], Awaitable[bool]], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


async def collect(etcd: Etcd, prefix: bytes, start_revision: int, count: int) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    async with contextlib.aclosing(etcd.watch_prefix(prefix, start_revision)) as watch:
        async for batch in watch:
            events.extend(batch)
            if len(events) >= count:
                return events
    raise AssertionError("the watch ended early")


def test_put_get_and_prefix_reads_sorted_by_key(single: EtcdCluster, prefix: bytes) -> None:
    async def scenario(etcd: Etcd) -> None:
        revisions = [await etcd.put(prefix + key, key * 2) for key in (b"b", b"c", b"a")]
        await etcd.put(prefix[:-1] + b"x", b"outside the prefix")
        kvs, revision = await etcd.get_prefix(prefix)
        assert [(kv.key, kv.value) for kv in kvs] == [
            (prefix + b"a", b"aa"),
            (prefix + b"b", b"bb"),
            (prefix + b"c", b"cc"),
        ]
        assert revision > revisions[-1]
        got = await etcd.get(prefix + b"a")
        assert got is not None and got.mod_revision == revisions[-1] and got.version == 1
        assert await etcd.get(prefix + b"missing") is None

    run_on_etcd(single.settings(), scenario)


def test_deletes_count_what_they_removed(single: EtcdCluster, prefix: bytes) -> None:
    async def scenario(etcd: Etcd) -> None:
        for key in (b"1", b"2", b"3", b"4"):
            await etcd.put(prefix + key, b"v")
        assert await etcd.delete_range(prefix + b"1", prefix + b"3") == 2
        assert await etcd.delete_prefix(prefix) == 2
        assert await etcd.delete_prefix(prefix) == 0
        assert (await etcd.get_prefix(prefix))[0] == []

    run_on_etcd(single.settings(), scenario)


def test_txn_takes_the_branch_its_value_compare_chooses(single: EtcdCluster, prefix: bytes) -> None:
    tail = prefix + b"tail"

    async def scenario(etcd: Etcd) -> None:
        await etcd.put(tail, b"7")
        moved = await etcd.txn(
            [value_equals(tail, b"7")], [put_op(tail, b"8"), put_op(prefix + b"log/8", b"e")]
        )
        assert moved.succeeded and moved.gets == []
        stale = await etcd.txn(
            [value_equals(tail, b"7")], [put_op(tail, b"8")], [get_op(tail), get_op(prefix + b"no")]
        )
        assert not stale.succeeded and stale.revision == moved.revision
        current, missing = stale.gets
        assert current is not None and current.value == b"8" and missing is None

    run_on_etcd(single.settings(), scenario)


def test_txn_version_zero_means_the_key_is_absent(single: EtcdCluster, prefix: bytes) -> None:
    key = prefix + b"once"

    async def scenario(etcd: Etcd) -> None:
        first = await etcd.txn([version_equals(key, 0)], [put_op(key, b"first")], [get_op(key)])
        second = await etcd.txn([version_equals(key, 0)], [put_op(key, b"second")], [get_op(key)])
        assert first.succeeded and not second.succeeded
        assert second.gets[0] is not None and second.gets[0].value == b"first"
        removed = await etcd.txn([version_equals(key, 1)], [delete_op(key)])
        assert removed.succeeded and await etcd.get(key) is None

    run_on_etcd(single.settings(), scenario)


def test_txn_create_revision_fences_out_an_earlier_holder(
    single: EtcdCluster, prefix: bytes
) -> None:
    leader = prefix + b"leader"

    async def scenario(etcd: Etcd) -> None:
        await etcd.put(leader, b"node-a")
        first = await etcd.get(leader)
        assert first is not None
        await etcd.put(leader, b"node-a, renewed")  # same term: create_revision unchanged
        assert (
            await etcd.txn([create_revision_equals(leader, first.create_revision)], [])
        ).succeeded
        await etcd.delete_prefix(leader)
        await etcd.put(leader, b"node-b")
        fenced = await etcd.txn(
            [create_revision_equals(leader, first.create_revision)],
            [put_op(prefix + b"log", b"from node-a")],
        )
        assert not fenced.succeeded and await etcd.get(prefix + b"log") is None

    run_on_etcd(single.settings(), scenario)


def test_lease_keeps_its_keys_until_revoked(single: EtcdCluster, prefix: bytes) -> None:
    key = prefix + b"node"

    async def scenario(etcd: Etcd) -> None:
        lease = await etcd.grant_lease(30)
        await etcd.put(key, b"alive", lease=lease)
        assert 0 < await etcd.refresh_lease(lease) <= 30
        got = await etcd.get(key)
        assert got is not None and got.lease == lease
        await etcd.revoke_lease(lease)
        assert await etcd.get(key) is None
        assert await etcd.refresh_lease(lease) == 0
        await etcd.revoke_lease(lease)  # already gone: not an error

    run_on_etcd(single.settings(), scenario)


def test_an_expired_lease_takes_its_keys_and_refuses_new_ones(
    single: EtcdCluster, prefix: bytes
) -> None:
    key = prefix + b"node"

    async def scenario(etcd: Etcd) -> None:
        lease = await etcd.grant_lease(1)
        await etcd.put(key, b"alive", lease=lease)

        async def is_gone() -> bool:
            return await etcd.get(key) is None

        await until(is_gone, "the leased key to expire", 10.0)
        assert await etcd.refresh_lease(lease) == 0
        with pytest.raises(LeaseNotFound, match="lease not found"):
            await etcd.put(key, b"again", lease=lease)

    run_on_etcd(single.settings(), scenario)


def test_watch_delivers_puts_and_deletes_in_order_from_a_start_revision(
    single: EtcdCluster, prefix: bytes
) -> None:
    async def scenario(etcd: Etcd) -> None:
        await etcd.put(prefix + b"before", b"not seen")
        start = await etcd.put(prefix + b"1", b"one")
        await etcd.put(prefix + b"2", b"two")
        await etcd.delete_prefix(prefix + b"1")
        await etcd.put(prefix[:-1] + b"-other", b"outside the prefix")
        watching = asyncio.create_task(collect(etcd, prefix, start, 6))
        await etcd.put(prefix + b"2", b"two again")
        await etcd.txn([], [delete_op(prefix + b"2"), put_op(prefix + b"3", b"three")])
        events = await watching
        assert [(event.kind, event.kv.key[len(prefix) :], event.kv.value) for event in events] == [
            ("put", b"1", b"one"),
            ("put", b"2", b"two"),
            ("delete", b"1", b""),
            ("put", b"2", b"two again"),
            ("delete", b"2", b""),
            ("put", b"3", b"three"),
        ]
        assert [event.kv.mod_revision for event in events] == sorted(
            event.kv.mod_revision for event in events
        )

    run_on_etcd(single.settings(), scenario)


def test_watch_from_a_compacted_revision_says_where_history_starts(
    single: EtcdCluster, prefix: bytes
) -> None:
    async def scenario(etcd: Etcd) -> None:
        first = await etcd.put(prefix + b"k", b"1")
        await etcd.put(prefix + b"k", b"2")
        latest = await etcd.put(prefix + b"k", b"3")
        await etcd.compact(latest)
        await etcd.compact(latest)  # again: already compacted is not an error
        with pytest.raises(WatchCompacted) as caught:
            await collect(etcd, prefix, first, 1)
        assert caught.value.compact_revision == latest
        events = await collect(etcd, prefix, latest, 1)
        assert events[0].kv.value == b"3"

    run_on_etcd(single.settings(), scenario)


def follower_first(cluster: EtcdCluster) -> tuple[int, EtcdSettings]:
    """A member that is not etcd's leader, and settings that name it first.

    Killing etcd's leader would leave a write sent to another member in doubt until
    a new leader is elected; these tests are about the member in use dying."""
    leader = asyncio.run(cluster.leader_index())
    first = (leader + 1) % 3
    urls = cluster.client_urls
    return first, EtcdSettings(
        endpoints=(urls[first], *(url for url in urls if url != urls[first]))
    )


def test_reads_move_on_when_the_member_in_use_dies(trio: EtcdCluster) -> None:
    first, settings = follower_first(trio)

    async def scenario(etcd: Etcd) -> None:
        assert etcd.endpoint == trio.client_urls[first]
        await etcd.put(b"/k", b"before")
        trio.kill(first)
        got = await etcd.get(b"/k")
        assert got is not None and got.value == b"before"
        assert etcd.endpoint != trio.client_urls[first]

    run_on_etcd(settings, scenario)


def test_writes_move_on_when_the_member_in_use_dies(trio: EtcdCluster) -> None:
    first, settings = follower_first(trio)

    async def scenario(etcd: Etcd) -> None:
        trio.kill(first)
        try:
            await etcd.put(b"/k", b"after")
        except EtcdUnavailable as error:
            # The write beat gRPC to noticing the kill and went onto the dead connection.
            assert error.maybe_committed
        revision = await etcd.put(b"/k", b"after")
        got = await etcd.get(b"/k")
        assert got is not None and got.mod_revision == revision
        assert etcd.endpoint != trio.client_urls[first]

    run_on_etcd(settings, scenario)


def test_a_member_losing_its_quorum_ends_the_watch(trio: EtcdCluster) -> None:
    only_m0 = EtcdSettings(endpoints=(trio.client_urls[0],))

    async def scenario(etcd: Etcd) -> None:
        start = await etcd.put(b"/w", b"1")
        watch = etcd.watch_prefix(b"/w", start)
        assert (await anext(watch))[0].kv.value == b"1"
        trio.kill(1)
        trio.kill(2)
        with pytest.raises(EtcdUnavailable, match="no leader"):
            await asyncio.wait_for(anext(watch), 20.0)
        with pytest.raises(EtcdUnavailable, match="no leader"):
            await etcd.get(b"/w")
        with pytest.raises(EtcdUnavailable, match="no leader") as refused:
            await etcd.put(b"/w", b"2")
        assert not refused.value.maybe_committed

    run_on_etcd(only_m0, scenario)


def test_members_name_one_leader_and_follow_a_new_one(trio: EtcdCluster) -> None:
    async def scenario(etcd: Etcd) -> None:
        members = await etcd.members()
        assert sorted(member["name"] for member in members) == ["m0", "m1", "m2"]
        assert sorted(url for member in members for url in member["client_urls"]) == sorted(
            trio.client_urls
        )
        assert [member["is_leader"] for member in members].count(True) == 1
        leader = await trio.leader_index()
        trio.kill(leader)
        await asyncio.to_thread(trio.wait_healthy, 20.0)
        assert await trio.leader_index() != leader

    run_on_etcd(trio.settings(), scenario)


def test_user_and_password_are_sent_and_an_expired_token_renewed(tmp_path: Path) -> None:
    require_etcd()
    with EtcdCluster(tmp_path / "etcd", extra_args=("--auth-token-ttl", "1")) as cluster:
        cluster.wait_healthy(20.0)
        asyncio.run(enable_auth(cluster.client_urls[0], "root", "s3cret"))
        settings = EtcdSettings(
            endpoints=tuple(cluster.client_urls), user="root", password="s3cret"
        )

        async def scenario(etcd: Etcd) -> None:
            await etcd.put(b"/auth", b"ok")
            await asyncio.sleep(2.5)  # the server forgets an idle token after 1 s
            got = await etcd.get(b"/auth")
            assert got is not None and got.value == b"ok"

        run_on_etcd(settings, scenario)
        with pytest.raises(EtcdError, match="user, its password"):
            run_on_etcd(
                EtcdSettings(endpoints=settings.endpoints, user="root", password="wrong"),
                Etcd.close,
            )
        with pytest.raises(EtcdError, match="user, its password"):
            run_on_etcd(EtcdSettings(endpoints=settings.endpoints), lambda etcd: etcd.get(b"/auth"))


async def enable_auth(endpoint: str, user: str, password: str) -> None:
    async with grpc.aio.insecure_channel(endpoint.removeprefix("http://")) as channel:
        auth = rpc.AuthStub(channel)
        await auth.UserAdd(rpc.AuthUserAddRequest(name=user, password=password), timeout=5)
        await auth.RoleAdd(rpc.AuthRoleAddRequest(name="root"), timeout=5)
        await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user=user, role="root"), timeout=5)
        await auth.AuthEnable(rpc.AuthEnableRequest(), timeout=5)


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    require_etcd()
    if shutil.which("openssl") is None:
        pytest.skip("TLS test needs the openssl command to make certificates")
    files = make_certificates(tmp_path)
    client_port, peer_port = free_ports(2)
    endpoint = f"https://127.0.0.1:{client_port}"
    settings = EtcdSettings(
        endpoints=(endpoint,),
        ca_file=files["ca"],
        cert_file=files["client"],
        key_file=files["client-key"],
    )
    with tls_member(tmp_path, files, client_port, peer_port):

        async def scenario(etcd: Etcd) -> None:
            assert etcd.endpoint == endpoint
            await etcd.put(b"/tls", b"ok")
            got = await etcd.get(b"/tls")
            assert got is not None and got.value == b"ok"

        asyncio.run(until_connected(settings))
        run_on_etcd(settings, scenario)
        without_certificate = EtcdSettings(endpoints=(endpoint,), ca_file=files["ca"], timeout_s=1)
        with pytest.raises(EtcdUnavailable):
            run_on_etcd(without_certificate, Etcd.close)


async def until_connected(settings: EtcdSettings) -> None:
    async def answers() -> bool:
        try:
            await (await Etcd.connect(settings)).close()
        except EtcdUnavailable:
            return False
        return True

    await until(answers, f"etcd at {settings.endpoints[0]}", 20.0)


@contextlib.contextmanager
def tls_member(
    directory: Path, files: dict[str, Path], client_port: int, peer_port: int
) -> Iterator[None]:
    peer = f"http://127.0.0.1:{peer_port}"
    command = [
        find_etcd(),
        *("--name", "tls", "--data-dir", str(directory / "data")),
        *("--listen-client-urls", f"https://127.0.0.1:{client_port}"),
        *("--advertise-client-urls", f"https://127.0.0.1:{client_port}"),
        *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
        *("--initial-cluster", f"tls={peer}"),
        *("--cert-file", str(files["server"]), "--key-file", str(files["server-key"])),
        *("--trusted-ca-file", str(files["ca"]), "--client-cert-auth"),
    ]
    with (directory / "etcd.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        process.kill()
        process.wait(timeout=10)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""
    files = {name: directory / f"{name}.pem" for name in ("ca", "server", "client")}
    keys = {f"{name}-key": directory / f"{name}-key.pem" for name in ("ca", "server", "client")}
    extensions = directory / "extensions.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    ca_key, ca = keys["ca-key"], files["ca"]
    openssl(
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=dtf-ca"],
        ["-keyout", ca_key, "-out", ca],
    )
    for name in ("server", "client"):
        request = directory / f"{name}.csr"
        openssl(
            ["req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}"],
            ["-keyout", keys[f"{name}-key"], "-out", request],
        )
        openssl(
            ["x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"],
            ["-days", "1", "-extfile", extensions, "-out", files[name]],
        )
    return {**files, **keys}


def openssl(*parts: list[str | Path]) -> None:
    command = ["openssl", *(str(arg) for part in parts for arg in part)]
    subprocess.run(command, check=True, capture_output=True, timeout=30)


def test_a_write_forwarded_to_a_hung_leader_is_abandoned_once_a_new_term_starts(
    trio: EtcdCluster,
) -> None:
    """A follower forwards a write to etcd's leader; a leader that hangs or dies loses it,
    and the follower would answer only at the write's deadline (here longer than the
    test may run). The adapter gives the write up as maybe committed when the follower's
    Raft term moves on, and waits through the election for the next call."""
    for _ in range(LEADER_PAUSE_ATTEMPTS):
        if forward_a_write_to_a_hung_leader(trio):
            return
        trio.wait_healthy(20.0)
    pytest.fail(f"etcd's leader moved before it could be paused {LEADER_PAUSE_ATTEMPTS} times")


LEADER_PAUSE_ATTEMPTS = 3


def forward_a_write_to_a_hung_leader(trio: EtcdCluster) -> bool:
    """The scenario, or False (having changed nothing) if the member paused as the leader
    was no longer the one the followers followed: on a loaded machine leadership can move
    between asking for the leader and pausing it."""
    leader = asyncio.run(trio.leader_index())
    followers = tuple(url for index, url in enumerate(trio.client_urls) if index != leader)

    async def scenario(etcd: Etcd) -> bool:
        await etcd.put(b"/k", b"before")
        trio.pause(leader)
        try:
            if trio.leader_among(await etcd.members()) != leader:
                return False
            with pytest.raises(EtcdUnavailable, match="abandoned") as abandoned:
                await etcd.put(b"/k", b"lost")
            assert abandoned.value.maybe_committed
            got = await etcd.get(b"/k")
        finally:
            trio.resume(leader)
        # Not yet: the write waits in the hung leader's socket, which can still deliver it
        # once the leader resumes (as a follower it forwards the write to the new leader).
        assert got is not None and got.value == b"before"
        revision = await etcd.put(b"/next", b"after")
        got = await etcd.get(b"/next")
        assert got is not None and got.mod_revision == revision
        return True

    return run_on_etcd(EtcdSettings(endpoints=followers, timeout_s=SCENARIO_TIMEOUT_S), scenario)
