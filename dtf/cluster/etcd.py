"""Thin async adapter over aetcd: the one module of dtf that speaks etcd's gRPC API.

How it works: the adapter holds one gRPC channel to one endpoint at a time, the local
member first. A call failing with UNAVAILABLE or DEADLINE_EXCEEDED retires that channel and
opens the next endpoint that answers a status probe. Reads, lease grants, refreshes and
revocations (all safe to repeat) are then retried there. A write (put, delete, txn) is
re-sent only when the failure proves etcd never received it: the channel had no connection,
or the member refused it for having no leader. Otherwise the caller gets
``EtcdUnavailable(maybe_committed=True)`` and must find out what happened.

Every request carries etcd's require-leader metadata, so a member cut off from its quorum
refuses at once instead of hanging, and ends its watches instead of letting them go silent.

gRPC channels belong to the event loop that opened them: use an ``Etcd`` on that loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar
from urllib.parse import urlsplit

import aetcd  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]
from aetcd import rpc, utils

from dtf.errors import DtfError, InvalidRequest

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_PORT = 2379
REQUIRE_LEADER = ("hasleader", "true")
CHANNEL_OPTIONS = {
    # Log batches and snapshot chunks run up to 1 MiB each; a watch response or prefix read
    # carries several, beyond gRPC's default 4 MiB receive limit.
    "grpc.max_receive_message_length": -1,
    "grpc.max_send_message_length": -1,
    # Pings find a connection that died silently (a partition) under a long watch; etcd
    # answers pings more often than every 5 s, or on a connection with no call, with GOAWAY.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 0,
}
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class EtcdError(DtfError):
    """etcd refused a request; ``code`` is the gRPC status name."""

    status_code = 502

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailable(EtcdError):
    """No endpoint answered; ``maybe_committed`` when a write was sent and its fate is unknown."""

    status_code = 503

    def __init__(self, message: str, *, maybe_committed: bool = False) -> None:
        super().__init__(message, code="UNAVAILABLE")
        self.maybe_committed = maybe_committed


class LeaseNotFound(EtcdError):
    """The lease named in a request has expired or was revoked."""

    status_code = 409


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
            _address(endpoint)
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


def _address(endpoint: str) -> tuple[str, int, bool]:
    """``(host, port, is_tls)`` of an ``http://`` or ``https://`` endpoint."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            f"etcd endpoint {endpoint!r} is not http(s)://host:port", field="etcd_endpoints"
        )
    return parts.hostname, parts.port or DEFAULT_PORT, parts.scheme == "https"


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    kv: KeyValue


@dataclass(frozen=True)
class Compare:
    """``target`` of ``key`` equals ``expected``; built by the ``*_equals`` functions."""

    key: bytes
    target: Literal["VALUE", "VERSION", "CREATE"]
    expected: bytes | int


@dataclass(frozen=True)
class Op:
    """One request of a transaction branch; built by ``put_op``, ``get_op``, ``delete_op``."""

    kind: Literal["put", "get", "delete"]
    key: bytes
    value: bytes = b""
    lease: int | None = None


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    gets: list[KeyValue | None]


class EtcdMember(TypedDict):
    id: int
    name: str
    client_urls: list[str]
    peer_urls: list[str]
    is_leader: bool


def value_equals(key: bytes, value: bytes) -> Compare:
    return Compare(key, "VALUE", value)


def version_equals(key: bytes, version: int) -> Compare:
    """Version 0 means the key is absent."""
    return Compare(key, "VERSION", version)


def create_revision_equals(key: bytes, revision: int) -> Compare:
    return Compare(key, "CREATE", revision)


def put_op(key: bytes, value: bytes, lease: int | None = None) -> Op:
    return Op("put", key, value, lease)


def get_op(key: bytes) -> Op:
    return Op("get", key)


def delete_op(key: bytes) -> Op:
    return Op("delete", key)


def _compare_message(compare: Compare) -> Any:
    field = {"VALUE": "value", "VERSION": "version", "CREATE": "create_revision"}[compare.target]
    return rpc.Compare(
        key=compare.key,
        result=rpc.Compare.EQUAL,
        target=getattr(rpc.Compare, compare.target),
        **{field: compare.expected},
    )


def _op_message(op: Op) -> Any:
    if op.kind == "put":
        return rpc.RequestOp(
            request_put=rpc.PutRequest(key=op.key, value=op.value, lease=op.lease or 0)
        )
    if op.kind == "get":
        return rpc.RequestOp(request_range=rpc.RangeRequest(key=op.key))
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=op.key))


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(
        key=bytes(kv.key),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )


def _watch_events(response: Any) -> list[WatchEvent]:
    return [
        WatchEvent("delete" if event.type == rpc.Event.DELETE else "put", _key_value(event.kv))
        for event in response.events
    ]


def _is_unsent(error: Any) -> bool:
    """Whether etcd provably never received the request, so a write may be re-sent."""
    details = error.details() or ""
    if error.code() is grpc.StatusCode.UNAVAILABLE:
        # A pick failure means no transport took the request; "no leader" is the
        # require-leader check, made before the request is proposed.
        return "failed to connect to all addresses" in details or "no leader" in details
    return _is_token_expired(error)


def _is_token_expired(error: Any) -> bool:
    return bool(
        error.code() is grpc.StatusCode.UNAUTHENTICATED
        and "invalid auth token" in (error.details() or "")
    )


def _is_retryable(error: Any) -> bool:
    return error.code() in RETRYABLE_CODES or _is_token_expired(error)


def _refused(what: str, endpoint: str, error: Any) -> EtcdError:
    code, details = error.code(), error.details() or ""
    message = f"etcd at {endpoint} refused {what}: {details} ({code.name})"
    if code is grpc.StatusCode.NOT_FOUND and "lease not found" in details:
        return LeaseNotFound(message, code=code.name)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) or any(
        sign in details for sign in ("authentication failed", "user name is empty")
    ):
        message += "; check the etcd user, its password and its role's permissions"
    return EtcdError(message, code=code.name)


def _read_pem(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidRequest(f"cannot read the etcd {what} file {path}: {error}") from error


class _AetcdClient(aetcd.Client):  # type: ignore[misc]
    """aetcd's client over a TLS or plain channel, with require-leader metadata."""

    def __init__(self, endpoint: str, settings: EtcdSettings) -> None:
        host, port, self.is_tls = _address(endpoint)
        super().__init__(
            host=host,
            port=port,
            username=settings.user,
            password=settings.password,
            timeout=settings.timeout_s,
            options=CHANNEL_OPTIONS,
        )
        self.endpoint = endpoint
        self.settings = settings
        self.watchstub: Any = None

    async def connect(self) -> None:
        target, options = f"{self._host}:{self._port}", list(self._options.items())
        if self.is_tls:
            self.channel = grpc.aio.secure_channel(target, self.credentials(), options=options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        metadata: tuple[tuple[str, str], ...] = (REQUIRE_LEADER,)
        if self._username is not None:
            self.auth_stub = rpc.AuthStub(self.channel)
            request = rpc.AuthenticateRequest(name=self._username, password=self._password)
            response = await self.auth_stub.Authenticate(request, timeout=self._timeout)
            metadata += (("token", response.token),)
        self.metadata = metadata
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self.watchstub = rpc.WatchStub(self.channel)
        self._connected.set()

    def credentials(self) -> Any:
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem(self.settings.ca_file, "CA certificate"),
            private_key=_read_pem(self.settings.key_file, "client key"),
            certificate_chain=_read_pem(self.settings.cert_file, "client certificate"),
        )

    async def close(self, grace_s: float | None = None) -> None:
        """Close the channel; calls still running get ``grace_s`` to finish."""
        if self.channel is not None:
            await self.channel.close(grace_s)
        self._init_channel_attrs()
        self.watchstub = None
        self._connected.clear()


async def _open_client(endpoint: str, settings: EtcdSettings) -> _AetcdClient:
    """A client whose member answered a status probe (and so has a leader)."""
    client, is_open = _AetcdClient(endpoint, settings), False
    try:
        await client.connect()
        await client.maintenancestub.Status(
            rpc.StatusRequest(), timeout=settings.timeout_s, metadata=client.metadata
        )
        is_open = True
    except grpc.aio.AioRpcError as error:
        if _is_retryable(error):
            raise EtcdUnavailable(f"{endpoint}: {error.details()}") from error
        raise _refused("connecting", endpoint, error) from error
    finally:
        if not is_open:
            await client.close()
    return client


async def _open_first(settings: EtcdSettings, start: int) -> tuple[_AetcdClient, int]:
    """The first endpoint from ``start`` on (wrapping around) that answers, and its index."""
    reasons = []
    count = len(settings.endpoints)
    for offset in range(count):
        index = (start + offset) % count
        try:
            return await _open_client(settings.endpoints[index], settings), index
        except EtcdUnavailable as error:
            reasons.append(error.message)
    raise EtcdUnavailable(
        f"no etcd endpoint answered within {settings.timeout_s}s ({'; '.join(reasons)}); "
        "check that etcd runs there and has a leader (etcdctl endpoint health --cluster)"
    )


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


class Etcd:
    """etcd through one endpoint at a time, moving to the next when it fails."""

    def __init__(self, settings: EtcdSettings, client: _AetcdClient, index: int) -> None:
        self._settings = settings
        self._client = client
        self._index = index
        self._generation = 0
        self._rotation_lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(cls, settings: EtcdSettings) -> Etcd:
        """Connect to the first endpoint, in order, whose member answers and has a leader."""
        client, index = await _open_first(settings, start=0)
        return cls(settings, client, index)

    @property
    def endpoint(self) -> str:
        return self._client.endpoint

    async def close(self) -> None:
        await self._client.close()
        await asyncio.gather(*self._closing)

    async def get(self, key: bytes) -> KeyValue | None:
        response = await self._unary("get", "kvstub", "Range", rpc.RangeRequest(key=key))
        return _key_value(response.kvs[0]) if response.kvs else None

    async def get_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix``, sorted by key, and the revision they were read at."""
        request = rpc.RangeRequest(key=prefix, range_end=utils.prefix_range_end(prefix))
        response = await self._unary("get prefix", "kvstub", "Range", request)
        return [_key_value(kv) for kv in response.kvs], int(response.header.revision)

    async def put(self, key: bytes, value: bytes, lease: int | None = None) -> int:
        request = rpc.PutRequest(key=key, value=value, lease=lease or 0)
        response = await self._unary("put", "kvstub", "Put", request, is_write=True)
        return int(response.header.revision)

    async def delete_prefix(self, prefix: bytes) -> int:
        """Delete every key under ``prefix``; the number deleted."""
        return await self.delete_range(prefix, utils.prefix_range_end(prefix))

    async def delete_range(self, start: bytes, end: bytes) -> int:
        """Delete the keys in ``[start, end)``; the number deleted."""
        request = rpc.DeleteRangeRequest(key=start, range_end=end)
        response = await self._unary("delete", "kvstub", "DeleteRange", request, is_write=True)
        return int(response.deleted)

    async def txn(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Run ``success`` if every comparison holds, else ``failure``, atomically."""
        request = rpc.TxnRequest(
            compare=[_compare_message(item) for item in compare],
            success=[_op_message(op) for op in success],
            failure=[_op_message(op) for op in failure],
        )
        response = await self._unary("txn", "kvstub", "Txn", request, is_write=True)
        gets = [
            _key_value(item.response_range.kvs[0]) if item.response_range.kvs else None
            for item in response.responses
            if item.WhichOneof("response") == "response_range"
        ]
        return TxnResult(bool(response.succeeded), int(response.header.revision), gets)

    async def grant_lease(self, ttl_s: int) -> int:
        # Retried like a read: a lease granted twice leaves an unused one that expires.
        request = rpc.LeaseGrantRequest(TTL=ttl_s, ID=0)
        response = await self._unary("lease grant", "leasestub", "LeaseGrant", request)
        if response.error:
            raise EtcdError(f"etcd at {self.endpoint} refused a {ttl_s}s lease: {response.error}")
        return int(response.ID)

    async def refresh_lease(self, lease_id: int) -> int:
        """Keep the lease alive; its remaining TTL in seconds, 0 when it is gone."""

        async def keep_alive(client: _AetcdClient) -> int:
            call = client.leasestub.LeaseKeepAlive(
                timeout=self._settings.timeout_s, metadata=client.metadata
            )
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                reply = await call.read()
            finally:
                call.cancel()
            return 0 if reply is grpc.aio.EOF else int(reply.TTL)

        return await self._call("lease refresh", keep_alive)

    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke the lease and delete its keys; a lease already gone is not an error."""
        request = rpc.LeaseRevokeRequest(ID=lease_id)
        try:
            await self._unary("lease revoke", "leasestub", "LeaseRevoke", request)
        except LeaseNotFound:
            return

    async def compact(self, revision: int) -> None:
        """Drop the history before ``revision``; watches cannot start earlier afterwards."""
        request = rpc.CompactionRequest(revision=revision)
        try:
            await self._unary("compaction", "kvstub", "Compact", request)
        except EtcdError as error:
            if error.code != "OUT_OF_RANGE":  # already compacted that far
                raise

    async def members(self) -> list[EtcdMember]:
        """etcd's members, the one the answering member follows marked ``is_leader``."""
        listing = await self._unary(
            "member list", "clusterstub", "MemberList", rpc.MemberListRequest()
        )
        status = await self._unary("status", "maintenancestub", "Status", rpc.StatusRequest())
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
        client, generation = self._client, self._generation
        create = rpc.WatchCreateRequest(
            key=prefix, range_end=utils.prefix_range_end(prefix), start_revision=start_revision
        )
        call = client.watchstub.Watch(metadata=client.metadata)
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                await call.write(rpc.WatchRequest(create_request=create))
                self._check_watch(await call.read(), prefix, start_revision)
            while True:
                response = await call.read()
                self._check_watch(response, prefix, start_revision)
                events = _watch_events(response)
                if events:
                    yield events
        except (grpc.aio.AioRpcError, TimeoutError) as error:
            raise await self._watch_failed(error, generation, prefix) from error
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
            _is_retryable(error) or error.code() is grpc.StatusCode.CANCELLED
        ):
            return _refused(f"a watch on {prefix!r}", self.endpoint, error)
        failed_endpoint = self.endpoint
        await self._rotate_quietly(generation)
        details = error.details() if isinstance(error, grpc.aio.AioRpcError) else "timed out"
        return EtcdUnavailable(f"watch on {prefix!r} at {failed_endpoint} ended: {details}")

    async def _unary(
        self, what: str, stub: str, method: str, request: Any, *, is_write: bool = False
    ) -> Any:
        async def send(client: _AetcdClient) -> Any:
            rpc_method = getattr(getattr(client, stub), method)
            return await rpc_method(
                request, timeout=self._settings.timeout_s, metadata=client.metadata
            )

        return await self._call(what, send, is_write=is_write)

    async def _call(
        self, what: str, send: Callable[[_AetcdClient], Awaitable[T]], *, is_write: bool = False
    ) -> T:
        """``send`` on the current endpoint, moving on while endpoints fail (see module doc)."""
        reasons: list[str] = []
        for _ in range(len(self._settings.endpoints) + 1):
            client, generation = self._client, self._generation
            if is_write and not await _is_connected(client.channel, self._settings.timeout_s):
                reasons.append(f"{client.endpoint}: not connected")
                await self._rotate(generation)
                continue
            try:
                return await send(client)
            except grpc.aio.AioRpcError as error:
                if not _is_retryable(error):
                    raise _refused(what, client.endpoint, error) from error
                reasons.append(f"{client.endpoint}: {error.details()}")
                if is_write and not _is_unsent(error):
                    await self._rotate_quietly(generation)
                    raise EtcdUnavailable(
                        f"etcd {what} at {client.endpoint} failed after it was sent "
                        f"({error.details()}); it may or may not have been applied",
                        maybe_committed=True,
                    ) from error
                await self._rotate(generation)
        raise EtcdUnavailable(f"etcd {what} failed on every endpoint: {'; '.join(reasons)}")

    async def _rotate(self, generation: int) -> None:
        """Move to the next endpoint that answers, unless another call already moved on."""
        async with self._rotation_lock:
            if generation != self._generation:
                return
            failed = self._client
            self._client, self._index = await _open_first(self._settings, start=self._index + 1)
            self._generation += 1
            self._retire(failed)
            logger.warning(
                "etcd endpoint %s failed; now using %s",
                failed.endpoint,
                self._client.endpoint,
                extra={"event": "etcd_endpoint_changed", "endpoint": self._client.endpoint},
            )

    async def _rotate_quietly(self, generation: int) -> None:
        # The caller is already raising EtcdUnavailable; a failed move is retried next call.
        try:
            await self._rotate(generation)
        except EtcdUnavailable as error:
            logger.warning("no etcd endpoint to move to: %s", error.message)

    def _retire(self, client: _AetcdClient) -> None:
        """Close a replaced client once the calls still on it have had their timeout."""
        task = asyncio.get_running_loop().create_task(client.close(self._settings.timeout_s))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
