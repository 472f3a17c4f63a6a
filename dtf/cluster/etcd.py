"""Thin async adapter over aetcd: dtf's one way to etcd's key-value, lease and watch API.

The connection under it lives in ``dtf.cluster.etcd_channel`` (over one client of
``dtf.cluster.etcd_client`` at a time): a call moves to the next endpoint when one fails,
and a write whose fate is unknown raises ``EtcdUnavailable(maybe_committed=True)`` for the
caller to find out what happened. The records it speaks in are in
``dtf.cluster.etcd_messages``; import all of them from here.

gRPC channels belong to the event loop that opened them: use an ``Etcd`` on that loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from aetcd import rpc, utils  # type: ignore[import-untyped]

from dtf.cluster.etcd_channel import EtcdChannel
from dtf.cluster.etcd_client import (
    AetcdClient,
    EtcdError,
    EtcdUnavailable,
    LeaseKeepAlives,
    LeaseNotFound,
    endpoint_address,
    is_retryable,
    open_first,
    refused,
)
from dtf.cluster.etcd_messages import (
    Compare,
    EtcdMember,
    KeyValue,
    Op,
    TxnResult,
    WatchEvent,
    compare_message,
    create_revision_equals,
    delete_op,
    get_op,
    key_value,
    op_message,
    put_op,
    value_equals,
    version_equals,
    watch_events,
)
from dtf.errors import InvalidRequest

__all__ = [
    "Compare",
    "Etcd",
    "EtcdError",
    "EtcdMember",
    "EtcdSettings",
    "EtcdUnavailable",
    "KeyValue",
    "LeaseNotFound",
    "Op",
    "TxnResult",
    "WatchCompacted",
    "WatchEvent",
    "create_revision_equals",
    "delete_op",
    "get_op",
    "put_op",
    "value_equals",
    "version_equals",
]


class WatchCompacted(EtcdError):
    """The watch's start revision is older than etcd's compaction point."""

    status_code = 410

    def __init__(self, message: str, *, compact_revision: int) -> None:
        super().__init__(message, code="OUT_OF_RANGE")
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise InvalidRequest("no etcd endpoint given; pass e.g. http://127.0.0.1:2379")
        for endpoint in self.endpoints:
            endpoint_address(endpoint)
        if (self.user is None) != (self.password is None):
            raise InvalidRequest("etcd user and password go together; give both or neither")
        if (self.cert_file is None) != (self.key_file is None):
            raise InvalidRequest("etcd client cert and key go together; give both or neither")
        if self.timeout_s <= 0:
            raise InvalidRequest(f"etcd timeout must be positive, got {self.timeout_s}s")

    @classmethod
    def parse(
        cls,
        endpoints: str,
        *,
        user: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        timeout_s: float = 2.0,
    ) -> EtcdSettings:
        """Settings from comma-separated endpoints: ``"http://a:2379,http://b:2379"``."""
        return cls(
            endpoints=tuple(part.strip() for part in endpoints.split(",") if part.strip()),
            user=user,
            password=password,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            timeout_s=timeout_s,
        )


class Etcd:
    """etcd through one endpoint at a time, moving to the next when it fails."""

    def __init__(self, settings: EtcdSettings, client: AetcdClient, index: int) -> None:
        self._settings = settings
        self._channel = EtcdChannel(settings, client, index)
        self._keep_alives = LeaseKeepAlives(settings.timeout_s)

    @classmethod
    async def connect(cls, settings: EtcdSettings) -> Etcd:
        """Connect to the first endpoint, in order, whose member answers and has a leader."""
        client, index = await open_first(settings, start=0)
        return cls(settings, client, index)

    @property
    def endpoint(self) -> str:
        return self._channel.client.endpoint

    async def close(self) -> None:
        self._keep_alives.close()
        await self._channel.close()

    async def get(self, key: bytes) -> KeyValue | None:
        response = await self._channel.unary("get", "kvstub", "Range", rpc.RangeRequest(key=key))
        return key_value(response.kvs[0]) if response.kvs else None

    async def get_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix``, sorted by key, and the revision they were read at."""
        request = rpc.RangeRequest(key=prefix, range_end=utils.prefix_range_end(prefix))
        response = await self._channel.unary("get prefix", "kvstub", "Range", request)
        return [key_value(kv) for kv in response.kvs], int(response.header.revision)

    async def put(self, key: bytes, value: bytes, lease: int | None = None) -> int:
        request = rpc.PutRequest(key=key, value=value, lease=lease or 0)
        response = await self._channel.unary("put", "kvstub", "Put", request, is_write=True)
        return int(response.header.revision)

    async def delete_prefix(self, prefix: bytes) -> int:
        """Delete every key under ``prefix``; the number deleted."""
        return await self.delete_range(prefix, utils.prefix_range_end(prefix))

    async def delete_range(self, start: bytes, end: bytes) -> int:
        """Delete the keys in ``[start, end)``; the number deleted."""
        request = rpc.DeleteRangeRequest(key=start, range_end=end)
        response = await self._channel.unary(
            "delete", "kvstub", "DeleteRange", request, is_write=True
        )
        return int(response.deleted)

    async def txn(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Run ``success`` if every comparison holds, else ``failure``, atomically."""
        request = rpc.TxnRequest(
            compare=[compare_message(item) for item in compare],
            success=[op_message(op) for op in success],
            failure=[op_message(op) for op in failure],
        )
        response = await self._channel.unary("txn", "kvstub", "Txn", request, is_write=True)
        gets = [
            key_value(item.response_range.kvs[0]) if item.response_range.kvs else None
            for item in response.responses
            if item.WhichOneof("response") == "response_range"
        ]
        return TxnResult(bool(response.succeeded), int(response.header.revision), gets)

    async def grant_lease(self, ttl_s: int) -> int:
        # Retried like a read: a lease granted twice leaves an unused one that expires.
        request = rpc.LeaseGrantRequest(TTL=ttl_s, ID=0)
        response = await self._channel.unary("lease grant", "leasestub", "LeaseGrant", request)
        if response.error:
            raise EtcdError(f"etcd at {self.endpoint} refused a {ttl_s}s lease: {response.error}")
        return int(response.ID)

    async def refresh_lease(self, lease_id: int) -> int:
        """Keep the lease alive; its remaining TTL in seconds, 0 when it is gone.
        Each lease keeps one keep-alive stream open for its refreshes."""

        async def keep_alive(client: AetcdClient) -> int:
            return await self._keep_alives.refresh(client, lease_id)

        return await self._channel.call("lease refresh", keep_alive)

    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke the lease and delete its keys; a lease already gone is not an error."""
        self._keep_alives.drop(lease_id)
        request = rpc.LeaseRevokeRequest(ID=lease_id)
        try:
            await self._channel.unary("lease revoke", "leasestub", "LeaseRevoke", request)
        except LeaseNotFound:
            return

    async def compact(self, revision: int) -> None:
        """Drop the history before ``revision``; watches cannot start earlier afterwards."""
        request = rpc.CompactionRequest(revision=revision)
        try:
            await self._channel.unary("compaction", "kvstub", "Compact", request)
        except EtcdError as error:
            if error.code != "OUT_OF_RANGE":  # already compacted that far
                raise

    async def members(self) -> list[EtcdMember]:
        """etcd's members, the one the answering member follows marked ``is_leader``."""
        listing = await self._channel.unary(
            "member list", "clusterstub", "MemberList", rpc.MemberListRequest()
        )
        status = await self._channel.unary(
            "status", "maintenancestub", "Status", rpc.StatusRequest()
        )
        return [
            EtcdMember(
                id=int(member.ID),
                name=str(member.name),
                client_urls=list(member.clientURLs),
                peer_urls=list(member.peerURLs),
                is_leader=bool(status.leader == member.ID),
            )
            for member in listing.members
        ]

    async def watch_prefix(
        self, prefix: bytes, start_revision: int
    ) -> AsyncGenerator[list[WatchEvent], None]:
        """Changes under ``prefix`` from ``start_revision`` on, one list per etcd response.

        Ends with ``EtcdUnavailable`` when the member fails or loses its leader (watch again
        from the revision after the last one seen) and ``WatchCompacted`` when the start
        revision is gone. Close it with ``contextlib.aclosing`` when leaving early.
        """
        client, generation, endpoint = self._channel.client, self._channel.generation, self.endpoint
        create = rpc.WatchCreateRequest(
            key=prefix, range_end=utils.prefix_range_end(prefix), start_revision=start_revision
        )
        try:
            call = client.watchstub.Watch(metadata=client.metadata)
        except grpc.aio.UsageError:
            # Another call found the endpoint failing and retired this channel meanwhile.
            raise EtcdUnavailable(
                f"watch on {prefix!r} at {endpoint} not started: its channel was closed"
            ) from None
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                await call.write(rpc.WatchRequest(create_request=create))
                self._check_watch(await call.read(), prefix, start_revision)
            while True:
                response = await call.read()
                self._check_watch(response, prefix, start_revision)
                client.note_term(int(response.header.raft_term))
                events = watch_events(response)
                if events:
                    yield events
        except (grpc.aio.AioRpcError, TimeoutError) as error:
            raise await self._watch_failed(error, generation, prefix) from error
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # grpc raises CancelledError from read() when the channel is closed under the
            # call (an endpoint rotation retires the old channel): the watch ended, we did not.
            raise EtcdUnavailable(
                f"watch on {prefix!r} at {endpoint} ended: its channel was closed"
            ) from None
        finally:
            call.cancel()

    def _check_watch(self, response: Any, prefix: bytes, start_revision: int) -> None:
        if response is grpc.aio.EOF:
            raise EtcdUnavailable(f"etcd at {self.endpoint} ended the watch on {prefix!r}")
        if response.compact_revision:
            raise WatchCompacted(
                f"etcd at {self.endpoint} compacted revisions before "
                f"{response.compact_revision}; the watch on {prefix!r} from {start_revision} "
                "must start from a snapshot instead",
                compact_revision=int(response.compact_revision),
            )
        if response.canceled:
            raise EtcdError(
                f"etcd at {self.endpoint} cancelled the watch on {prefix!r}: "
                f"{response.cancel_reason or 'no reason given'}"
            )

    async def _watch_failed(
        self, error: BaseException, generation: int, prefix: bytes
    ) -> EtcdError:
        if isinstance(error, grpc.aio.AioRpcError) and not (
            is_retryable(error) or error.code() is grpc.StatusCode.CANCELLED
        ):
            return refused(f"a watch on {prefix!r}", self.endpoint, error)
        failed_endpoint = self.endpoint
        await self._channel.rotate_quietly(generation)
        details = error.details() if isinstance(error, grpc.aio.AioRpcError) else "timed out"
        return EtcdUnavailable(f"watch on {prefix!r} at {failed_endpoint} ended: {details}")
