"""Checkpoint blobs shared by the coordinators of a cluster.

How this works: every coordinator keeps its own blob store (``CheckpointStore``)
in its data dir. A checkpoint saved through one node is stored there first,
then ``replicate`` sends it to every other node the cluster view lists
(``PUT /api/internal/blobs/{digest}`` with the cluster's shared admin key) and
returns as soon as one peer has stored it, so the checkpoint the journal then
refers to survives the loss of any one node. The copies to the other peers
finish in the background. A node asked for a blob it lacks (it was down during
the save, or a background copy failed) ``fetch``es it from all peers at once
(``GET /api/internal/blobs/{digest}``, which answers from the peer's own store
and never asks further, so lookups cannot bounce between nodes), keeps the first
copy whose SHA-256 matches, and stores it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Coroutine, Iterable

import httpx

from dtf.cluster.view import ClusterView, NodeInfo
from dtf.coordinator.checkpoint_store import CheckpointStore
from dtf.errors import CoordinatorUnavailable, NotFound

log = logging.getLogger(__name__)

INTERNAL_BLOBS_PATH = "/api/internal/blobs"
ACK_TIMEOUT_S = 2.0
COPY_TIMEOUT_S = 30.0
FETCH_TIMEOUT_S = 10.0
PROBLEM_TEXT_CHARS = 200

PeerUrls = Callable[[], list[str]]
"""The base URLs of the other coordinators, as the cluster knows them now."""


def peer_urls(nodes: Iterable[NodeInfo], own_node_id: str) -> list[str]:
    """The URLs of every listed node but this one."""
    return [node.url.rstrip("/") for node in nodes if node.node_id != own_node_id]


def blob_url(peer: str, digest: str) -> str:
    return f"{peer.rstrip('/')}{INTERNAL_BLOBS_PATH}/{digest}"


def is_blob_of(digest: str, data: bytes) -> bool:
    """Are ``data`` the bytes named by ``digest`` (their SHA-256)?"""
    return hashlib.sha256(data).hexdigest() == digest


def describe_failure(exc: httpx.HTTPError) -> str:
    """An httpx error as text (some, such as timeouts, have an empty message)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class BlobPeers:
    """Copies blobs of ``store`` to and from the coordinators ``peers`` names."""

    def __init__(
        self,
        store: CheckpointStore,
        peers: PeerUrls,
        admin_key: str,
        *,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        copy_timeout_s: float = COPY_TIMEOUT_S,
        fetch_timeout_s: float = FETCH_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.peers = peers
        self.ack_timeout_s = ack_timeout_s
        self.copy_timeout_s = copy_timeout_s
        self.fetch_timeout_s = fetch_timeout_s
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {admin_key}"}, transport=transport, trust_env=False
        )
        self._background: set[asyncio.Task[str | None]] = set()

    @classmethod
    def of_cluster(
        cls, store: CheckpointStore, cluster: ClusterView, own_node_id: str, admin_key: str
    ) -> BlobPeers:
        """Peers are the nodes ``cluster`` lists at each call, less ``own_node_id``."""
        return cls(store, lambda: peer_urls(cluster.nodes(), own_node_id), admin_key)

    async def replicate(self, digest: str, data: bytes) -> None:
        """Send the blob to every peer; return once one has stored it (at once without
        peers). Raises ``CoordinatorUnavailable`` when none does within ``ack_timeout_s``;
        the copies still under way carry on in the background either way."""
        peers = self.peers()
        if not peers:
            return
        copies = [self._in_background(self._send(peer, digest, data)) for peer in peers]
        problems: list[str] = []
        try:
            for copy in asyncio.as_completed(copies, timeout=self.ack_timeout_s):
                problem = await copy
                if problem is None:
                    return
                problems.append(problem)
        except TimeoutError:
            problems.append(f"no other answer within {self.ack_timeout_s:g} s")
        raise CoordinatorUnavailable(
            f"checkpoint {digest} is stored on this coordinator, but no other coordinator "
            f"acknowledged a copy ({'; '.join(problems)}), so it was not recorded: losing "
            "this node would lose it. Save it again (the checkpoint SDK retries a 503 by itself)"
        )

    async def fetch(self, digest: str) -> bytes:
        """The blob from the first peer that has it (its SHA-256 checked), stored here too.
        Raises ``NotFound`` when no peer serves it within ``fetch_timeout_s``."""
        peers = self.peers()
        lookups = [asyncio.create_task(self._get(peer, digest)) for peer in peers]
        try:
            for lookup in asyncio.as_completed(lookups, timeout=self.fetch_timeout_s):
                data = await lookup
                if data is not None:
                    await asyncio.to_thread(self.store.put, data)
                    log.info("fetched checkpoint %s (%d bytes) from a peer", digest, len(data))
                    return data
        except TimeoutError:
            log.warning("no peer served checkpoint %s within %g s", digest, self.fetch_timeout_s)
        finally:
            for lookup in lookups:
                lookup.cancel()
        raise NotFound(
            f"checkpoint {digest} is stored neither on this coordinator nor on the other "
            f"coordinators it reached ({', '.join(peers) or 'none listed'}); check that the "
            "coordinator it was saved through is running"
        )

    async def close(self) -> None:
        """Give copies under way ``ack_timeout_s`` to finish, cancel the rest, close."""
        pending = set(self._background)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.ack_timeout_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._client.aclose()

    def _in_background(self, work: Coroutine[None, None, str | None]) -> asyncio.Task[str | None]:
        """A task kept referenced until done, so a copy outlives the request that began it."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _send(self, peer: str, digest: str, data: bytes) -> str | None:
        """Store the blob on ``peer``: None once it has, else what went wrong."""
        try:
            response = await self._client.put(
                blob_url(peer, digest),
                content=data,
                headers={"Content-Type": "application/octet-stream"},
                timeout=self.copy_timeout_s,
            )
        except httpx.HTTPError as exc:
            problem = f"{peer}: {describe_failure(exc)}"
        else:
            if response.is_success:
                log.debug("copied checkpoint %s to %s", digest, peer)
                return None
            problem = f"{peer} answered {response.status_code}: {_error_text(response)}"
        log.warning(
            "could not copy checkpoint %s to %s: %s",
            digest,
            peer,
            problem,
            extra={"event": "blob_copy_failed", "digest": digest, "peer": peer},
        )
        return problem

    async def _get(self, peer: str, digest: str) -> bytes | None:
        """The blob as ``peer`` stores it, or None (it has none, is unreachable, or lies)."""
        try:
            response = await self._client.get(blob_url(peer, digest), timeout=self.fetch_timeout_s)
        except httpx.HTTPError as exc:
            log.info("cannot ask %s for checkpoint %s: %s", peer, digest, describe_failure(exc))
            return None
        if response.status_code != 200:
            if response.status_code != 404:
                log.warning(
                    "%s answered %d for checkpoint %s: %s",
                    peer,
                    response.status_code,
                    digest,
                    _error_text(response),
                )
            return None
        if not is_blob_of(digest, response.content):
            log.warning("%s served bytes that are not checkpoint %s; ignored", peer, digest)
            return None
        return response.content


def _error_text(response: httpx.Response) -> str:
    return response.text[:PROBLEM_TEXT_CHARS]
