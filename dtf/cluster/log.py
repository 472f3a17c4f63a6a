"""The replicated journal kept in etcd: CAS appends, reads, a watch, snapshots.

How this works: entries (``dtf.core.commands.encode``) are appended in batches.
A batch is one key ``P/log/<first_seq:016d>`` holding a msgpack list of entries,
and ``P/tail`` holds the seq of the last entry (absent means 0). An append is one
etcd transaction comparing ``P/tail`` with the tail the writer expects and, for
leader-only commands, ``P/leader``'s create revision with the writer's fencing
epoch: appends from several coordinators are totally ordered, seqs count entries
from 1 without gaps, and a deposed leader cannot append. Because of that compare,
sending the same append twice can land it at most once, which is how an append
whose outcome was lost with an etcd member is settled.

A snapshot is zlib chunks under ``P/snapshots/<id>/`` published by a fenced flip
of ``P/snapshot``; the log keys it covers and older chunks are then deleted.
``P`` is ``/dtf/<cluster>``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import zlib
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

import msgspec

from dtf.cluster.etcd import (
    Compare,
    Etcd,
    EtcdUnavailable,
    KeyValue,
    Op,
    TxnResult,
    create_revision_equals,
    get_op,
    put_op,
    value_equals,
    version_equals,
)
from dtf.errors import DtfError, InvalidRequest

log = logging.getLogger(__name__)

MAX_VALUE_BYTES = 1 << 20
# msgpack spends at most 5 bytes on a bin header per entry and 5 on the list header
_ENTRY_OVERHEAD = 5
MAX_ENTRY_BYTES = MAX_VALUE_BYTES - 2 * _ENTRY_OVERHEAD
SAME_APPEND_TRIES = 3
SNAPSHOT_LOAD_TRIES = 3

_batch_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(list[bytes])


class TailMoved(DtfError):
    """The log tail was not the expected one: another coordinator appended first.
    ``appended`` leading entries of the batch did land (a batch over 1 MiB is
    several transactions) at seqs ``expected_tail + 1 ...``."""

    status_code = 409

    def __init__(self, expected_tail: int, actual_tail: int, *, appended: int = 0) -> None:
        super().__init__(
            f"the log tail is {actual_tail}, not the expected {expected_tail}: another "
            "coordinator appended first; learn the new tail and append again"
        )
        self.actual_tail = actual_tail
        self.appended = appended


@dataclass(frozen=True)
class Leader:
    node_id: str
    url: str
    epoch: int


class NotLeader(DtfError):
    """A leader-only write from a coordinator that is not (or no longer) the leader.
    409 naming the leader when one is known, else 503."""

    def __init__(self, action: str, leader: Leader | None = None) -> None:
        if leader is None:
            where = "no leader is known right now; retry in a few seconds"
        else:
            where = (
                f"the leader is {leader.node_id} at {leader.url} (epoch {leader.epoch}); "
                "send it there"
            )
        super().__init__(f"{action} refused: this coordinator is not the leader; {where}")
        self.leader = leader
        self.status_code = 503 if leader is None else 409


class LogCompacted(DtfError):
    """Entries asked for were deleted after a snapshot covered them."""

    status_code = 503


class SnapshotCorrupt(DtfError):
    status_code = 500


class SnapshotPointer(msgspec.Struct, frozen=True):
    seq: int
    id: str
    chunks: int
    sha256: str
    size: int = msgspec.field(name="bytes")


@dataclass(frozen=True)
class LogKeys:
    """The etcd keys of one cluster (see the module docstring)."""

    tail: bytes
    leader: bytes
    snapshot: bytes
    log_prefix: bytes
    snapshots_prefix: bytes

    @classmethod
    def of(cls, cluster: str) -> LogKeys:
        if not cluster or "/" in cluster:
            raise InvalidRequest(
                f"cluster name {cluster!r} cannot name etcd keys: use letters, digits, '-', '_'",
                field="cluster",
            )
        root = f"/dtf/{cluster}/".encode()
        return cls(
            *(root + name for name in (b"tail", b"leader", b"snapshot", b"log/", b"snapshots/"))
        )

    def log(self, first_seq: int) -> bytes:
        return self.log_prefix + f"{first_seq:016d}".encode()

    def seq_of(self, log_key: bytes) -> int:
        return int(log_key.removeprefix(self.log_prefix))

    def snapshot_dir(self, snapshot_id: str) -> bytes:
        return self.snapshots_prefix + f"{snapshot_id}/".encode()

    def chunk(self, snapshot_id: str, index: int) -> bytes:
        return self.snapshot_dir(snapshot_id) + f"{index:06d}".encode()


def check_entry(entry: bytes) -> None:
    """Raise ``InvalidRequest`` for an entry too large for one etcd value."""
    if len(entry) > MAX_ENTRY_BYTES:
        raise InvalidRequest(
            f"the command is {len(entry)} bytes encoded, over the {MAX_ENTRY_BYTES}-byte "
            "limit of the replicated log; send it in smaller parts (fewer tasks per request)"
        )


def split_batches(entries: Sequence[bytes]) -> list[list[bytes]]:
    """Consecutive runs of ``entries`` whose encoded list fits one etcd value."""
    batches: list[list[bytes]] = []
    size = MAX_VALUE_BYTES
    for entry in entries:
        check_entry(entry)
        if size + len(entry) + _ENTRY_OVERHEAD > MAX_VALUE_BYTES:
            batches.append([])
            size = _ENTRY_OVERHEAD
        batches[-1].append(entry)
        size += len(entry) + _ENTRY_OVERHEAD
    return batches


def leader_of(kv: KeyValue | None) -> Leader | None:
    """The leader ``P/leader`` names; its epoch is the key's create revision."""
    if kv is None:
        return None
    try:
        record = msgspec.json.decode(kv.value, type=dict[str, object])
    except msgspec.DecodeError:
        log.warning("the leader key holds no JSON record: %r", kv.value[:200])
        return Leader("?", "?", kv.create_revision)
    return Leader(str(record.get("node_id", "?")), str(record.get("url", "?")), kv.create_revision)


class EtcdLog:
    """The journal of one cluster in etcd (see the module docstring)."""

    def __init__(self, etcd: Etcd, cluster: str) -> None:
        self.etcd = etcd
        self.cluster = cluster
        self.keys = LogKeys.of(cluster)

    async def tail(self) -> int:
        return _tail_value(await self.etcd.get(self.keys.tail))

    async def append(
        self, entries: Sequence[bytes], *, expected_tail: int, fence_epoch: int | None
    ) -> int:
        """Append ``entries`` after ``expected_tail`` and return the last one's seq.

        Raises ``TailMoved`` when another append came first, ``NotLeader`` when
        ``fence_epoch`` is given and is no longer the leader key's epoch, and
        ``EtcdUnavailable`` (``maybe_committed`` when it may have landed)."""
        tail = expected_tail
        for batch in split_batches(entries):
            try:
                tail = await self._append_batch(batch, tail, fence_epoch)
            except TailMoved as moved:
                appended = tail - expected_tail
                raise TailMoved(expected_tail, moved.actual_tail, appended=appended) from None
        return tail

    async def read(self, after_seq: int) -> tuple[list[tuple[int, bytes]], int]:
        """Every ``(seq, entry)`` after ``after_seq``, and the etcd revision to
        start ``watch`` from. Raises ``LogCompacted`` when entries right after
        ``after_seq`` are gone: load the snapshot and read after its seq."""
        known_tail = await self.tail()
        kvs, revision = await self.etcd.get_prefix(self.keys.log_prefix)
        entries: list[tuple[int, bytes]] = []
        for kv in kvs:
            for seq, entry in self._entries_of(kv):
                if seq > after_seq + len(entries) + 1:
                    raise self._compacted(after_seq)
                if seq > after_seq:
                    entries.append((seq, entry))
        if after_seq + len(entries) < known_tail:
            raise self._compacted(after_seq)
        return entries, revision

    async def watch(self, after_revision: int) -> AsyncGenerator[list[tuple[int, bytes]], None]:
        """The entries of each log key put after ``after_revision``, in seq order."""
        watch = self.etcd.watch_prefix(self.keys.log_prefix, after_revision + 1)
        async with aclosing(watch) as responses:
            async for events in responses:
                entries = [
                    entry
                    for event in events
                    if event.kind == "put"
                    for entry in self._entries_of(event.kv)
                ]
                if entries:
                    yield entries

    async def save_snapshot(self, seq: int, data: bytes, *, fence_epoch: int | None) -> int:
        """Publish ``data`` (the state after entry ``seq``), then delete the log
        keys and snapshot chunks it makes obsolete; return the seq of the newest
        published snapshot (``seq``, or a later one another coordinator published).
        ``NotLeader`` when ``fence_epoch`` is no longer the leader's."""
        current_kv = await self.etcd.get(self.keys.snapshot)
        current = _pointer_of(current_kv)
        if current is not None and current.seq >= seq:
            return current.seq
        pointer = await self._write_chunks(seq, data)
        compare = [_unchanged(self.keys.snapshot, current_kv)]
        if fence_epoch is not None:
            compare.append(create_revision_equals(self.keys.leader, fence_epoch))
        result = await self.etcd.txn(
            compare,
            [put_op(self.keys.snapshot, msgspec.json.encode(pointer))],
            [get_op(self.keys.snapshot), get_op(self.keys.leader)],
        )
        if not result.succeeded:
            await self.etcd.delete_prefix(self.keys.snapshot_dir(pointer.id))
            self._raise_if_fenced(result, fence_epoch, f"publishing the snapshot at seq {seq}")
            newer = _pointer_of(result.gets[0])
            return 0 if newer is None else newer.seq
        await self._compact(seq)
        await self.etcd.delete_range(self.keys.snapshots_prefix, self.keys.snapshot_dir(pointer.id))
        log.info(
            "snapshot at seq %d published (%d bytes, %d chunks)",
            seq,
            len(data),
            pointer.chunks,
            extra={"event": "snapshot", "seq": seq, "cluster": self.cluster},
        )
        return seq

    async def load_snapshot(self) -> tuple[int, bytes] | None:
        """The newest snapshot as ``(seq, data)``, checked against its sha256, or None."""
        for _ in range(SNAPSHOT_LOAD_TRIES):
            pointer = _pointer_of(await self.etcd.get(self.keys.snapshot))
            if pointer is None:
                return None
            chunks, _ = await self.etcd.get_prefix(self.keys.snapshot_dir(pointer.id))
            if len(chunks) == pointer.chunks:
                return pointer.seq, self._verified(pointer, chunks)
            log.info("snapshot %s was replaced while loading it; loading the newer one", pointer.id)
        raise SnapshotCorrupt(
            f"the snapshot of cluster {self.cluster} has missing chunks under "
            f"{self.keys.snapshots_prefix.decode()} after {SNAPSHOT_LOAD_TRIES} tries; "
            f"delete {self.keys.snapshot.decode()} only if the log still holds every entry"
        )

    async def _append_batch(self, batch: list[bytes], expected_tail: int, epoch: int | None) -> int:
        txn = self._append_txn(batch, expected_tail, epoch)
        was_ambiguous = False
        for _ in range(SAME_APPEND_TRIES):
            try:
                result = await self.etcd.txn(txn.compare, txn.success, txn.failure)
            except EtcdUnavailable as exc:
                if not (exc.maybe_committed or was_ambiguous):
                    raise
                if await self._holds(txn.key, txn.value):
                    return txn.last_seq
                was_ambiguous = True
                continue
            if result.succeeded or (was_ambiguous and await self._holds(txn.key, txn.value)):
                return txn.last_seq
            self._raise_if_fenced(result, epoch, f"appending with fencing epoch {epoch}")
            raise TailMoved(expected_tail, _tail_value(result.gets[0]))
        raise EtcdUnavailable(
            f"appending seqs {expected_tail + 1}..{txn.last_seq} to cluster {self.cluster}: "
            f"etcd did not answer {SAME_APPEND_TRIES} times; the entries may have been appended",
            maybe_committed=True,
        )

    def _append_txn(self, batch: list[bytes], expected_tail: int, epoch: int | None) -> _AppendTxn:
        """Put the batch and the new tail if the tail is ``expected_tail`` (and the
        leader's epoch is ``epoch``); otherwise get the tail and the leader."""
        value = _batch_encoder.encode(batch)
        key, last_seq = self.keys.log(expected_tail + 1), expected_tail + len(batch)
        compare = [_tail_equals(self.keys.tail, expected_tail)]
        if epoch is not None:
            compare.append(create_revision_equals(self.keys.leader, epoch))
        success = [put_op(key, value), put_op(self.keys.tail, str(last_seq).encode())]
        failure = [get_op(self.keys.tail), get_op(self.keys.leader)]
        return _AppendTxn(key, value, last_seq, compare, success, failure)

    async def _holds(self, key: bytes, value: bytes) -> bool:
        """Whether ``key`` holds ``value``, after an append whose outcome was lost."""
        try:
            kv = await self.etcd.get(key)
        except EtcdUnavailable as exc:
            raise EtcdUnavailable(
                f"an append to cluster {self.cluster} may have landed and etcd cannot be "
                f"read to tell ({exc.message})",
                maybe_committed=True,
            ) from exc
        return kv is not None and kv.value == value

    def _raise_if_fenced(self, result: TxnResult, epoch: int | None, action: str) -> None:
        leader_kv = result.gets[-1]
        if epoch is not None and (leader_kv is None or leader_kv.create_revision != epoch):
            raise NotLeader(action, leader_of(leader_kv))

    def _entries_of(self, kv: KeyValue) -> list[tuple[int, bytes]]:
        first_seq = self.keys.seq_of(kv.key)
        return list(enumerate(_batch_decoder.decode(kv.value), start=first_seq))

    def _compacted(self, after_seq: int) -> LogCompacted:
        return LogCompacted(
            f"the log of cluster {self.cluster} no longer holds the entries after seq "
            f"{after_seq} (a snapshot covers them); load the snapshot and read after its seq",
            field="after_seq",
        )

    async def _write_chunks(self, seq: int, data: bytes) -> SnapshotPointer:
        snapshot_id = f"{seq:016d}-{secrets.token_hex(4)}"
        compressed = zlib.compress(data)
        chunks = [
            compressed[start : start + MAX_VALUE_BYTES]
            for start in range(0, len(compressed), MAX_VALUE_BYTES)
        ]
        for index, chunk in enumerate(chunks):
            await self.etcd.put(self.keys.chunk(snapshot_id, index), chunk)
        return SnapshotPointer(
            seq, snapshot_id, len(chunks), hashlib.sha256(data).hexdigest(), len(data)
        )

    async def _compact(self, through_seq: int) -> None:
        """Delete the log keys whose every entry is at or before ``through_seq``."""
        kvs, _ = await self.etcd.get_prefix(self.keys.log_prefix)
        end = self.keys.log(through_seq + 1)
        for kv in kvs:
            if self.keys.seq_of(kv.key) + len(_batch_decoder.decode(kv.value)) - 1 > through_seq:
                end = kv.key
                break
        deleted = await self.etcd.delete_range(self.keys.log_prefix, end)
        log.info("compacted %d log keys through seq %d", deleted, through_seq)

    def _verified(self, pointer: SnapshotPointer, chunks: list[KeyValue]) -> bytes:
        try:
            data = zlib.decompress(b"".join(kv.value for kv in chunks))
        except zlib.error as exc:
            raise self._corrupt(pointer, f"cannot be decompressed: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != pointer.sha256 or len(data) != pointer.size:
            raise self._corrupt(pointer, "does not match its sha256")
        return data

    def _corrupt(self, pointer: SnapshotPointer, why: str) -> SnapshotCorrupt:
        return SnapshotCorrupt(
            f"the snapshot {pointer.id} of cluster {self.cluster} at seq {pointer.seq} {why}; "
            "restore etcd from a backup"
        )


@dataclass(frozen=True)
class _AppendTxn:
    key: bytes
    value: bytes
    last_seq: int
    compare: list[Compare]
    success: list[Op]
    failure: list[Op]


def _tail_value(kv: KeyValue | None) -> int:
    return 0 if kv is None else int(kv.value)


def _tail_equals(tail_key: bytes, tail: int) -> Compare:
    return version_equals(tail_key, 0) if tail == 0 else value_equals(tail_key, str(tail).encode())


def _unchanged(key: bytes, kv: KeyValue | None) -> Compare:
    return version_equals(key, 0) if kv is None else value_equals(key, kv.value)


def _pointer_of(kv: KeyValue | None) -> SnapshotPointer | None:
    return None if kv is None else msgspec.json.decode(kv.value, type=SnapshotPointer)
