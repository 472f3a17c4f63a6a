"""One gRPC client of one etcd endpoint, and the errors etcd's answers become.

Private to ``dtf.cluster.etcd``, which re-exports the errors raised here; import from there.
Every request carries etcd's require-leader metadata, so a member cut off from its quorum
refuses at once instead of hanging, and ends its watches and lease keep-alive streams
instead of letting them go silent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aetcd  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]
from aetcd import rpc

from dtf.errors import DtfError, InvalidRequest

if TYPE_CHECKING:
    from dtf.cluster.etcd import EtcdSettings

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


def endpoint_address(endpoint: str) -> tuple[str, int, bool]:
    """``(host, port, is_tls)`` of an ``http://`` or ``https://`` endpoint."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            f"etcd endpoint {endpoint!r} is not http(s)://host:port", field="etcd_endpoints"
        )
    return parts.hostname, parts.port or DEFAULT_PORT, parts.scheme == "https"


def is_unsent(error: Any) -> bool:
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


def is_retryable(error: Any) -> bool:
    return error.code() in RETRYABLE_CODES or _is_token_expired(error)


def refused(what: str, endpoint: str, error: Any) -> EtcdError:
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


class AetcdClient(aetcd.Client):  # type: ignore[misc]
    """aetcd's client over a TLS or plain channel, with require-leader metadata."""

    def __init__(self, endpoint: str, settings: EtcdSettings) -> None:
        host, port, self.is_tls = endpoint_address(endpoint)
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
        self.raft_term = 0  # the newest Raft term a reply of this member carried

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

    def note_term(self, term: int) -> None:
        self.raft_term = max(self.raft_term, term)

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


@dataclass
class _KeepAliveStream:
    client: AetcdClient
    call: Any
    is_busy: bool = False


class LeaseKeepAlives:
    """One LeaseKeepAlive stream per lease, kept open: a refresh is one request and
    its reply on it, not a new gRPC call. A stream that fails, times out, is cancelled
    mid-refresh or belongs to a client since replaced is closed; a refresh whose kept
    stream failed or was ended by etcd asks again at once on a new stream, whose
    failure is the refresh's. A refresh of a lease whose stream is busy uses a stream
    of its own."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._streams: dict[int, _KeepAliveStream] = {}

    async def refresh(self, client: AetcdClient, lease_id: int) -> int:
        """The lease's remaining TTL in seconds after keeping it alive, 0 when it is gone.
        Raises what the gRPC call raises, and ``TimeoutError`` after ``timeout_s``."""
        held = self._streams.get(lease_id)
        if held is not None and (held.client is not client or held.call.done()):
            self.drop(lease_id)  # replaced client, or ended since (a member restart)
            held = None
        if held is not None and not held.is_busy:
            try:
                ttl = await self._exchange(held, lease_id)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                # A stream broken since its last refresh fails with whatever status the
                # broken transport gives (often INTERNAL): ask again on a new one.
                ttl = None
            if ttl is not None:
                return ttl
        stream = _KeepAliveStream(client, client.leasestub.LeaseKeepAlive(metadata=client.metadata))
        if lease_id not in self._streams:
            self._streams[lease_id] = stream
        try:
            ttl = await self._exchange(stream, lease_id)
        finally:
            if self._streams.get(lease_id) is not stream:
                stream.call.cancel()
        return 0 if ttl is None else ttl

    def drop(self, lease_id: int) -> None:
        """Close the lease's stream, if it has one."""
        stream = self._streams.pop(lease_id, None)
        if stream is not None:
            stream.call.cancel()

    def close(self) -> None:
        for lease_id in list(self._streams):
            self.drop(lease_id)

    async def _exchange(self, stream: _KeepAliveStream, lease_id: int) -> int | None:
        """One request and its reply on ``stream``; None when etcd ended the stream."""
        stream.is_busy = True
        try:
            async with asyncio.timeout(self.timeout_s):
                await stream.call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                reply = await stream.call.read()
        except asyncio.CancelledError:
            self._forget(lease_id, stream)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # the stream was closed under this refresh (a revoke, the client closing)
            raise EtcdUnavailable("the lease keep-alive stream was closed mid-refresh") from None
        except BaseException:
            self._forget(lease_id, stream)
            raise
        finally:
            stream.is_busy = False
        if reply is grpc.aio.EOF:
            self._forget(lease_id, stream)
            return None
        stream.client.note_term(int(reply.header.raft_term))
        if reply.TTL <= 0:
            self._forget(lease_id, stream)
        return max(0, int(reply.TTL))

    def _forget(self, lease_id: int, stream: _KeepAliveStream) -> None:
        stream.call.cancel()
        if self._streams.get(lease_id) is stream:
            del self._streams[lease_id]


async def _open_client(endpoint: str, settings: EtcdSettings) -> AetcdClient:
    """A client whose member answered a status probe (and so has a leader)."""
    client, is_open = AetcdClient(endpoint, settings), False
    try:
        await client.connect()
        status = await client.maintenancestub.Status(
            rpc.StatusRequest(), timeout=settings.timeout_s, metadata=client.metadata
        )
        client.note_term(int(status.raftTerm))
        is_open = True
    except grpc.aio.AioRpcError as error:
        if is_retryable(error):
            raise EtcdUnavailable(f"{endpoint}: {error.details()}") from error
        raise refused("connecting", endpoint, error) from error
    finally:
        if not is_open:
            await client.close()
    return client


async def open_first(settings: EtcdSettings, start: int) -> tuple[AetcdClient, int]:
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
