"""The connection under ``dtf.cluster.etcd``: one gRPC channel to one etcd endpoint at a time.

Private to ``dtf.cluster.etcd``, which re-exports the errors raised here; import from there.

How it works: the channel is opened to the local member first. A call failing with
UNAVAILABLE or DEADLINE_EXCEEDED retires that channel and opens the next endpoint that
answers a status probe. Reads, lease grants, refreshes and revocations (all safe to repeat)
are then retried there. A write (put, delete, txn) is re-sent only when the failure proves
etcd never received it: the channel had no connection, or the member refused it for having
no leader. Otherwise the caller gets ``EtcdUnavailable(maybe_committed=True)`` and must find
out what happened.

While no endpoint has a leader (an election), a call pauses and tries again until its
``timeout_s`` has passed, so an election costs callers a wait rather than an error.

A write that a member forwarded to a leader that then died is lost without an answer:
the member would only report it at the write's deadline. So a write that takes longer
than ``LEADER_CHECK_AFTER_S`` has its member's Raft term checked every
``LEADER_CHECK_EVERY_S``; when the member lost its leader or moved to a newer term, the
write is abandoned as ``maybe_committed``, within about the election timeout of the kill.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc  # type: ignore[import-untyped]
from aetcd import rpc  # type: ignore[import-untyped]

from dtf.cluster.etcd_client import (
    AetcdClient,
    EtcdUnavailable,
    is_retryable,
    is_unsent,
    open_first,
    refused,
)

if TYPE_CHECKING:
    from dtf.cluster.etcd import EtcdSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
# A write in flight this long has its member's Raft term checked, then this often.
LEADER_CHECK_AFTER_S = 0.2
LEADER_CHECK_EVERY_S = 0.1
LEADER_CHECK_TIMEOUT_S = 0.5
NO_LEADER_PAUSE_S = 0.05


class _LeaderChanged(Exception):
    """etcd's leader changed while a write was in flight: the write may be lost."""


async def _leader_change(client: AetcdClient, term: int) -> str:
    """Why the client's member has not the leader it had at Raft ``term``; "" if it has."""
    try:
        status = await client.maintenancestub.Status(
            rpc.StatusRequest(), timeout=LEADER_CHECK_TIMEOUT_S, metadata=client.metadata
        )
    except grpc.aio.UsageError:
        # Another call found the endpoint failing and retired this channel meanwhile.
        return "the adapter moved off this endpoint"
    except grpc.aio.AioRpcError as error:
        details = error.details() or ""
        return "the member lost its leader" if "no leader" in details else ""
    if not status.leader:
        return "the member lost its leader"
    if int(status.raftTerm) > term:
        return f"the Raft term moved from {term} to {status.raftTerm}"
    return ""


async def _is_connected(channel: Any, timeout_s: float) -> bool:
    """Whether the channel has a live connection, waiting up to ``timeout_s`` while it dials."""
    state = channel.get_state(try_to_connect=True)
    failed = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)
    try:
        async with asyncio.timeout(timeout_s):
            while state is not grpc.ChannelConnectivity.READY:
                if state in failed:
                    return False
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=True)
    except TimeoutError:
        return False
    return True


class _Retry(Exception):
    """An attempt failed and may be tried again (a write only when etcd never got it)."""


class EtcdChannel:
    """The client of one endpoint at a time, moving to the next when it fails.

    ``generation`` counts the moves; a caller that saw a failure passes the generation it
    sent on, so concurrent failures of one channel move on once.
    """

    def __init__(self, settings: EtcdSettings, client: AetcdClient, index: int) -> None:
        self._settings = settings
        self._client = client
        self._index = index
        self._generation = 0
        self._rotation_lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def client(self) -> AetcdClient:
        return self._client

    @property
    def generation(self) -> int:
        return self._generation

    async def close(self) -> None:
        await self._client.close()
        await asyncio.gather(*self._closing)

    async def unary(
        self, what: str, stub: str, method: str, request: Any, *, is_write: bool = False
    ) -> Any:
        async def send(client: AetcdClient) -> Any:
            rpc_method = getattr(getattr(client, stub), method)
            response = await rpc_method(
                request, timeout=self._settings.timeout_s, metadata=client.metadata
            )
            client.note_term(int(response.header.raft_term))
            return response

        return await self.call(what, send, is_write=is_write)

    async def call(
        self, what: str, send: Callable[[AetcdClient], Awaitable[T]], *, is_write: bool = False
    ) -> T:
        """``send`` on the current endpoint, moving on while endpoints fail (see module doc)."""
        reasons: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.timeout_s
        while True:
            client, generation = self._client, self._generation
            try:
                return await self._attempt(what, client, generation, send, is_write=is_write)
            except _Retry as failure:
                reasons.append(f"{client.endpoint}: {failure}")
            if len(reasons) > len(self._settings.endpoints) and loop.time() >= deadline:
                raise EtcdUnavailable(
                    f"etcd {what} failed on every endpoint: {'; '.join(reasons[-4:])}"
                )
            await self._move_on(generation, deadline)

    async def _attempt(
        self,
        what: str,
        client: AetcdClient,
        generation: int,
        send: Callable[[AetcdClient], Awaitable[T]],
        *,
        is_write: bool,
    ) -> T:
        if not is_write:
            try:
                return await send(client)
            except grpc.aio.UsageError as error:
                raise _Retry("its channel was retired") from error
            except TimeoutError as error:  # a stream's own deadline, as a lease refresh has
                raise _Retry(f"no answer within {self._settings.timeout_s}s") from error
            except grpc.aio.AioRpcError as error:
                if not is_retryable(error):
                    raise refused(what, client.endpoint, error) from error
                raise _Retry(error.details()) from error
        if not await _is_connected(client.channel, self._settings.timeout_s):
            raise _Retry("not connected")
        try:
            return await self._send_write(client, send)
        except grpc.aio.UsageError as error:
            # Raised when the call is made, so the channel never sent it.
            raise _Retry("its channel was retired") from error
        except grpc.aio.AioRpcError as error:
            if not is_retryable(error):
                raise refused(what, client.endpoint, error) from error
            if is_unsent(error):
                raise _Retry(error.details()) from error
            await self.rotate_quietly(generation)
            raise EtcdUnavailable(
                f"etcd {what} at {client.endpoint} failed after it was sent "
                f"({error.details()}); it may or may not have been applied",
                maybe_committed=True,
            ) from error
        except _LeaderChanged as changed:
            logger.warning("etcd %s at %s abandoned: %s", what, client.endpoint, changed)
            raise EtcdUnavailable(
                f"etcd {what} at {client.endpoint} was abandoned: {changed}; "
                "it may or may not have been applied",
                maybe_committed=True,
            ) from None

    async def _send_write(
        self, client: AetcdClient, send: Callable[[AetcdClient], Awaitable[T]]
    ) -> T:
        """``send``, abandoned when etcd's leader changes meanwhile.

        A member forwards a write to the leader; when the leader dies the write is lost
        and the member answers only at the deadline. So a write still in flight after
        ``LEADER_CHECK_AFTER_S`` has the member's Raft term checked every
        ``LEADER_CHECK_EVERY_S``: a new term or no leader ends the wait.
        """
        term = client.raft_term
        sent = asyncio.ensure_future(send(client))
        try:
            await asyncio.wait({sent}, timeout=LEADER_CHECK_AFTER_S)
            while not sent.done():
                changed = await _leader_change(client, term)
                if changed:
                    raise _LeaderChanged(changed)
                await asyncio.wait({sent}, timeout=LEADER_CHECK_EVERY_S)
            return sent.result()
        finally:
            if not sent.done():
                sent.cancel()
                await asyncio.wait({sent})
            if not sent.cancelled():
                sent.exception()

    async def _move_on(self, generation: int, deadline: float) -> None:
        """Rotate after a failed attempt; while no endpoint has a leader (an election),
        pause and let the next attempt go to the current one again."""
        try:
            await self._rotate(generation)
        except EtcdUnavailable as error:
            loop = asyncio.get_running_loop()
            if loop.time() >= deadline:
                raise
            logger.info("waiting for an etcd leader: %s", error.message)
            await asyncio.sleep(min(NO_LEADER_PAUSE_S, deadline - loop.time()))

    async def rotate_quietly(self, generation: int) -> None:
        # The caller is already raising EtcdUnavailable; a failed move is retried next call.
        try:
            await self._rotate(generation)
        except EtcdUnavailable as error:
            logger.warning("no etcd endpoint to move to: %s", error.message)

    async def _rotate(self, generation: int) -> None:
        """Move to the next endpoint that answers, unless another call already moved on."""
        async with self._rotation_lock:
            if generation != self._generation:
                return
            failed = self._client
            self._client, self._index = await open_first(self._settings, start=self._index + 1)
            self._generation += 1
            self._retire(failed)
            logger.warning(
                "etcd endpoint %s failed; now using %s",
                failed.endpoint,
                self._client.endpoint,
                extra={"event": "etcd_endpoint_changed", "endpoint": self._client.endpoint},
            )

    def _retire(self, client: AetcdClient) -> None:
        """Close a replaced client once the calls still on it have had their timeout."""
        task = asyncio.get_running_loop().create_task(client.close(self._settings.timeout_s))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
