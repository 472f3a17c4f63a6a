"""The cluster's coordinators: who is up (``P/nodes/<id>``) and who is disabled.

How this works: each node keeps ``P/nodes/<id>`` attached to a lease of its
own and rewrites it about every second with its applied log position, so the
key vanishes within the TTL after the node dies and ``nodes()`` lists only live
nodes. Each record names the node's ``incarnation``, a random id of this
process: a node restarted under the same id is another incarnation, and the
workers connected through the old one are not connected through the new.
``P/disabled/<id>`` (no lease; written through any node) takes a node out of
elections and load balancing; each node watches ``P/disabled/`` and calls
``on_disabled`` when its own flag changes, which is how its election learns to
resign. Each node also watches ``P/nodes/`` (``listed``: node id ->
incarnation) and wakes ``wait_nodes_changed`` when a node joins, leaves or is
replaced; the leader then reads the registry afresh (``registry``) before it
journals a node's loss. A node writes its record before it serves (``start``
fails if it cannot), so a worker's registration is journaled only after the
record of the node it came through is in etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from dtf import __version__
from dtf.cluster.etcd import Etcd, EtcdError, KeyValue, LeaseNotFound, WatchEvent, delete_op
from dtf.cluster.history import (
    CorruptRecord,
    backoff_s,
    cluster_prefix,
    decode_leader,
    disabled_key,
    leader_key,
)
from dtf.cluster.loops import follow, keep_doing, level
from dtf.cluster.view import NodeInfo
from dtf.errors import CoordinatorUnavailable

log = logging.getLogger(__name__)

DisabledCallback = Callable[[bool], None]
"""Called with True when this node gets disabled and False when it is enabled again."""
REGISTER_WITHIN_S = 30.0
"""How long ``start`` tries to write the node's first record before giving up."""


@dataclass(frozen=True)
class NodeRecord:
    """What ``P/nodes/<id>`` holds."""

    node_id: str
    url: str
    applied_seq: int
    started_at: float
    updated_at: float
    version: str
    incarnation: str = ""


def encode_node(record: NodeRecord) -> bytes:
    return json.dumps(asdict(record)).encode()


def decode_node(value: bytes) -> NodeRecord:
    try:
        data = json.loads(value)
        return NodeRecord(
            node_id=str(data["node_id"]),
            url=str(data["url"]),
            applied_seq=int(data["applied_seq"]),
            started_at=float(data["started_at"]),
            updated_at=float(data["updated_at"]),
            version=str(data["version"]),
            incarnation=str(data.get("incarnation", "")),
        )
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptRecord(f"node record {value[:120]!r} is not valid ({exc})") from None


def encode_disabled(reason: str, at: float) -> bytes:
    return json.dumps({"reason": reason, "at": at}).encode()


def decode_disabled(value: bytes) -> str:
    """The reason a disabled flag gives (the raw value when it is not ours)."""
    try:
        data = json.loads(value)
        return str(data["reason"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return value.decode(errors="replace")


def node_infos(
    records: list[NodeRecord], disabled: Mapping[str, str], leader_id: str | None, log_seq: int
) -> list[NodeInfo]:
    """Live nodes by id, their lag counted from the log tail or the furthest node."""
    head = max([log_seq, *(record.applied_seq for record in records)])
    return [
        NodeInfo(
            node_id=record.node_id,
            url=record.url,
            role="leader" if record.node_id == leader_id else "follower",
            enabled=record.node_id not in disabled,
            disabled_reason=disabled.get(record.node_id),
            applied_seq=record.applied_seq,
            lag=head - record.applied_seq,
            started_at=record.started_at,
            updated_at=record.updated_at,
            healthy=record.node_id not in disabled,
            version=record.version,
        )
        for record in sorted(records, key=lambda record: record.node_id)
    ]


class Members:
    def __init__(
        self,
        etcd: Etcd,
        cluster: str,
        node_id: str,
        url: str,
        *,
        ttl_s: int,
        applied_seq: Callable[[], int],
        on_disabled: DisabledCallback | None = None,
        version: str = __version__,
        report_every_s: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.etcd = etcd
        self.node_id = node_id
        self.url = url
        self.ttl_s = ttl_s
        self.version = version
        self.report_every_s = report_every_s
        self._applied_seq = applied_seq
        self._on_disabled = on_disabled
        self._wall_clock = wall_clock
        self._prefix = cluster_prefix(cluster)
        self._nodes_prefix = self._prefix + b"nodes/"
        self._node_key = self._nodes_prefix + node_id.encode()
        self._disabled_prefix = disabled_key(self._prefix, "")
        self._started_at = wall_clock()
        self._lease: int | None = None
        self._reported_at = -math.inf
        self._disabled: dict[str, str] = {}
        self._is_self_disabled = False
        self.incarnation = secrets.token_hex(8)
        self._listed: dict[str, str] | None = None
        self._nodes_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def disabled_reason(self) -> str | None:
        """Why this node is disabled, as last seen; None while it is enabled."""
        return self._disabled.get(self.node_id)

    @property
    def listed(self) -> dict[str, str] | None:
        """The registry as this node's watch last saw it (node id -> incarnation,
        "" for a record that names none); None until it was first read."""
        return None if self._listed is None else dict(self._listed)

    async def registry(self) -> dict[str, str]:
        """The registry as etcd has it now (a fresh, linearizable read)."""
        kvs, _ = await self.etcd.get_prefix(self._nodes_prefix)
        return self._incarnations(kvs)

    async def wait_nodes_changed(self, timeout_s: float) -> None:
        """Return when the registry changed, or after ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._nodes_changed.wait()
        self._nodes_changed.clear()

    async def start(self, register_within_s: float = REGISTER_WITHIN_S) -> None:
        """Write this node's record (retried for up to ``register_within_s``; a
        node must not serve unlisted), then keep it fresh and follow the registry
        and the disabled flags."""
        await self._register_first(register_within_s)
        self._tasks = [
            asyncio.create_task(self._keep_registered(), name="dtf-members-report"),
            asyncio.create_task(self._follow_disabled(), name="dtf-members-watch"),
            asyncio.create_task(self._follow_nodes(), name="dtf-members-nodes"),
        ]

    async def _register_first(self, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        failures = 0
        while True:
            try:
                await self._refresh_registration()
                return
            except EtcdError as exc:
                delay_s = backoff_s(failures)
                if time.monotonic() + delay_s > deadline:
                    raise CoordinatorUnavailable(
                        f"node {self.node_id} could not write its record {self._node_key!r} "
                        f"to etcd within {within_s:g} s (last error: {exc}); a node must be "
                        "in the registry before it serves: check that etcd is reachable and "
                        "has quorum, then start the coordinator again"
                    ) from exc
                log.log(
                    level(failures), "%s is not in the node registry yet: %s", self.node_id, exc
                )
                failures += 1
            await asyncio.sleep(delay_s)

    async def stop(self) -> None:
        """Stop reporting and give the lease back, which removes this node's record."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                await self.etcd.revoke_lease(lease)
            except EtcdError as exc:
                log.warning(
                    "node record of %s stays until its lease expires: %s", self.node_id, exc
                )

    async def nodes(self, *, log_seq: int = 0) -> list[NodeInfo]:
        """The live nodes, each with its lag behind ``log_seq`` or the furthest node."""
        (node_kvs, _), (flag_kvs, _), leader_kv = await asyncio.gather(
            self.etcd.get_prefix(self._nodes_prefix),
            self.etcd.get_prefix(self._disabled_prefix),
            self.etcd.get(leader_key(self._prefix)),
        )
        records = []
        for kv in node_kvs:
            try:
                records.append(decode_node(kv.value))
            except CorruptRecord as exc:
                log.warning("skipping %r: %s", kv.key, exc)
        leader_id = None
        if leader_kv is not None:
            leader_id = decode_leader(leader_kv.value, leader_kv.create_revision).node_id
        return node_infos(records, self._flags(flag_kvs), leader_id, log_seq)

    async def set_enabled(self, node_id: str, enabled: bool, reason: str) -> None:
        """Enable ``node_id`` again, or disable it (it resigns if it leads and never campaigns)."""
        key = disabled_key(self._prefix, node_id)
        if enabled:
            await self.etcd.txn([], [delete_op(key)])
        else:
            await self.etcd.put(key, encode_disabled(reason, self._wall_clock()))
        log.info(
            "node %s %s: %s",
            node_id,
            "enabled" if enabled else "disabled",
            reason,
            extra={"event": "node_enabled" if enabled else "node_disabled", "node_id": node_id},
        )

    async def is_disabled(self, node_id: str) -> bool:
        return await self.etcd.get(disabled_key(self._prefix, node_id)) is not None

    async def _keep_registered(self) -> None:
        """Refresh the lease every TTL/3 and rewrite the record every ``report_every_s``."""
        every_s = min(self.report_every_s, self.ttl_s / 3)
        await keep_doing(
            self._refresh_registration,
            what=f"{self.node_id}'s node record",
            retry_s=lambda _: every_s,
        )

    async def _refresh_registration(self) -> float:
        try:
            is_new_lease = await self._keep_lease()
            if is_new_lease or time.monotonic() - self._reported_at >= self.report_every_s:
                self._reported_at = time.monotonic()
                await self._report_position()
        except EtcdError:
            self._reported_at = -math.inf
            raise
        return min(self.report_every_s, self.ttl_s / 3)

    async def _keep_lease(self) -> bool:
        """Keep this node's lease alive; whether it had to take a new one."""
        if self._lease is not None and await self.etcd.refresh_lease(self._lease) > 0:
            return False
        self._lease = await self.etcd.grant_lease(self.ttl_s)
        return True

    async def _report_position(self) -> None:
        record = NodeRecord(
            node_id=self.node_id,
            url=self.url,
            applied_seq=self._applied_seq(),
            started_at=self._started_at,
            updated_at=self._wall_clock(),
            version=self.version,
            incarnation=self.incarnation,
        )
        try:
            await self.etcd.put(self._node_key, encode_node(record), self._lease)
        except LeaseNotFound:
            self._lease = None
            raise

    async def _follow_disabled(self) -> None:
        await follow(
            self.etcd,
            self._disabled_prefix,
            self._read_flags,
            self._take_flags,
            what=f"{self.node_id}'s view of disabled nodes",
        )

    async def _read_flags(self) -> int:
        kvs, revision = await self.etcd.get_prefix(self._disabled_prefix)
        self._disabled = self._flags(kvs)
        self._notice_own_flag()
        return revision

    def _take_flags(self, events: list[WatchEvent]) -> None:
        for event in events:
            self._take_flag(event)
        self._notice_own_flag()

    def _take_flag(self, event: WatchEvent) -> None:
        node_id = event.kv.key[len(self._disabled_prefix) :].decode()
        if event.kind == "put":
            self._disabled[node_id] = decode_disabled(event.kv.value)
        else:
            self._disabled.pop(node_id, None)

    def _flags(self, kvs: list[KeyValue]) -> dict[str, str]:
        start = len(self._disabled_prefix)
        return {kv.key[start:].decode(): decode_disabled(kv.value) for kv in kvs}

    def _notice_own_flag(self) -> None:
        is_disabled = self.node_id in self._disabled
        if is_disabled == self._is_self_disabled:
            return
        self._is_self_disabled = is_disabled
        log.warning(
            "%s is %s",
            self.node_id,
            f"disabled: {self._disabled[self.node_id]}" if is_disabled else "enabled again",
            extra={"event": "node_disabled" if is_disabled else "node_enabled"},
        )
        if self._on_disabled is not None:
            self._on_disabled(is_disabled)

    async def _follow_nodes(self) -> None:
        await follow(
            self.etcd,
            self._nodes_prefix,
            self._read_nodes,
            self._take_node_events,
            what=f"{self.node_id}'s view of the node registry",
        )

    async def _read_nodes(self) -> int:
        kvs, revision = await self.etcd.get_prefix(self._nodes_prefix)
        self._listed = self._incarnations(kvs)
        self._nodes_changed.set()
        return revision

    def _take_node_events(self, events: list[WatchEvent]) -> None:
        """Note nodes joining, leaving and restarting (a record's periodic rewrite changes nothing)."""
        listed = dict(self._listed or {})
        before = dict(listed)
        for event in events:
            node_id = self._registered_id(event.kv.key)
            if event.kind == "put":
                listed[node_id] = self._incarnation_of(event.kv)
            else:
                listed.pop(node_id, None)
        self._listed = listed
        if listed != before:
            self._nodes_changed.set()

    def _incarnations(self, kvs: list[KeyValue]) -> dict[str, str]:
        return {self._registered_id(kv.key): self._incarnation_of(kv) for kv in kvs}

    def _incarnation_of(self, kv: KeyValue) -> str:
        """The incarnation a record names; "" (matching any) if it is unreadable."""
        try:
            return decode_node(kv.value).incarnation
        except CorruptRecord as exc:
            log.warning("skipping %r: %s", kv.key, exc)
            return ""

    def _registered_id(self, key: bytes) -> str:
        return key[len(self._nodes_prefix) :].decode()
