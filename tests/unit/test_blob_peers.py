"""Copying checkpoint blobs between coordinators, against an in-memory network
(httpx.MockTransport): who is a peer, when a save counts as replicated, and
which copy a fetch keeps."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine
from pathlib import Path

import httpx
import pytest

from dtf.cluster.view import NodeInfo
from dtf.coordinator.blob_peers import BlobPeers, blob_url, is_blob_of, peer_urls
from dtf.coordinator.checkpoint_store import CheckpointStore
from dtf.errors import CoordinatorUnavailable, NotFound

ADMIN_KEY = "cluster-admin-key"
BLOB = b'{"step": 7}'
DIGEST = hashlib.sha256(BLOB).hexdigest()
AsyncHandler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def node(node_id: str, url: str) -> NodeInfo:
    return NodeInfo(node_id, url, "follower", True, None, 0, 0, 0.0, 0.0, True, "0")


def make_peers(tmp_path: Path, urls: list[str], handler: AsyncHandler) -> BlobPeers:
    store = CheckpointStore(tmp_path / "checkpoints", max_bytes=1000)
    transport = httpx.MockTransport(handler)
    return BlobPeers(store, lambda: urls, ADMIN_KEY, transport=transport)


def test_peers_are_the_listed_nodes_but_this_one() -> None:
    nodes = [node("a", "http://a:1/"), node("b", "http://b:2"), node("c", "http://c:3/")]
    assert peer_urls(nodes, "b") == ["http://a:1", "http://c:3"]
    assert peer_urls([node("a", "http://a:1")], "a") == []


def test_blob_urls_and_digest_checks() -> None:
    assert blob_url("http://a:1/", DIGEST) == f"http://a:1/api/internal/blobs/{DIGEST}"
    assert is_blob_of(DIGEST, BLOB)
    assert not is_blob_of(DIGEST, BLOB + b" ")


def test_without_peers_a_save_needs_no_copy(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no request expected, got {request.url}")

    async def scenario() -> None:
        peers = make_peers(tmp_path, [], handler)
        await peers.replicate(DIGEST, BLOB)
        await peers.close()

    asyncio.run(scenario())


def test_replicate_returns_at_the_first_ack_and_the_other_copies_finish_later(
    tmp_path: Path,
) -> None:
    received: dict[str, tuple[str, bytes, str]] = {}

    async def scenario() -> None:
        slow_peer_may_answer = asyncio.Event()

        async def handler(request: httpx.Request) -> httpx.Response:
            if request.url.host == "c":
                await slow_peer_may_answer.wait()
            content = await request.aread()
            auth = request.headers["authorization"]
            received[request.url.host] = (request.method, content, auth)
            return httpx.Response(201, json={"digest": DIGEST})

        peers = make_peers(tmp_path, ["http://b:1", "http://c:1"], handler)
        await peers.replicate(DIGEST, BLOB)
        assert set(received) == {"b"}  # returned without waiting for c
        slow_peer_may_answer.set()
        await peers.close()

    asyncio.run(scenario())
    expected = ("PUT", BLOB, f"Bearer {ADMIN_KEY}")
    assert received == {"b": expected, "c": expected}


def test_replicate_refuses_the_save_when_no_peer_stores_it(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "b":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(401, json={"error": {"message": "invalid API key"}})

    async def scenario() -> None:
        peers = make_peers(tmp_path, ["http://b:1", "http://c:1"], handler)
        try:
            await peers.replicate(DIGEST, BLOB)
        finally:
            await peers.close()

    with pytest.raises(CoordinatorUnavailable) as refused:
        asyncio.run(scenario())
    message = refused.value.message
    assert "http://b:1: ConnectError: connection refused" in message
    assert "http://c:1 answered 401" in message and "invalid API key" in message
    assert "Save it again" in message


def test_fetch_keeps_the_copy_whose_digest_matches_and_stores_it(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/api/internal/blobs/{DIGEST}"
        if request.url.host == "b":
            return httpx.Response(200, content=b"corrupted bytes")
        return httpx.Response(200, content=BLOB)

    async def scenario() -> bytes:
        peers = make_peers(tmp_path, ["http://b:1", "http://c:1"], handler)
        try:
            return await peers.fetch(DIGEST)
        finally:
            await peers.close()

    assert asyncio.run(scenario()) == BLOB
    stored = CheckpointStore(tmp_path / "checkpoints", max_bytes=1000)
    assert stored.get(DIGEST) == BLOB


def test_fetch_names_the_peers_when_none_has_the_blob(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "b":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(404, json={"error": {"message": "not stored"}})

    async def scenario() -> None:
        peers = make_peers(tmp_path, ["http://b:1", "http://c:1"], handler)
        try:
            await peers.fetch(DIGEST)
        finally:
            await peers.close()

    with pytest.raises(NotFound, match=r"\(http://b:1, http://c:1\)"):
        asyncio.run(scenario())
    with pytest.raises(NotFound, match="not stored"):
        CheckpointStore(tmp_path / "checkpoints", max_bytes=1000).get(DIGEST)
