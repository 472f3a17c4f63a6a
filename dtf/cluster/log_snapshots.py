"""Snapshots of the replicated log in etcd: zlib chunks under ``P/snapshots/<id>/``
published by a fenced flip of ``P/snapshot``, after which the log keys the snapshot
covers and older chunks are deleted (see ``dtf.cluster.log``).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import zlib

import msgspec

from dtf.cluster.etcd import (
    Compare,
    Etcd,
    KeyValue,
    create_revision_equals,
    get_op,
    put_op,
    value_equals,
    version_equals,
)
from dtf.cluster.log_format import MAX_VALUE_BYTES, LogKeys, entries_of, raise_if_fenced
from dtf.errors import DtfError

log = logging.getLogger(__name__)

SNAPSHOT_LOAD_TRIES = 3


class SnapshotCorrupt(DtfError):
    status_code = 500


class SnapshotPointer(msgspec.Struct, frozen=True):
    seq: int
    id: str
    chunks: int
    sha256: str
    size: int = msgspec.field(name="bytes")


class Snapshots:
    """The snapshots of one cluster's log."""

    def __init__(self, etcd: Etcd, keys: LogKeys, cluster: str) -> None:
        self.etcd = etcd
        self.keys = keys
        self.cluster = cluster

    async def save(self, seq: int, data: bytes, *, fence_epoch: int | None) -> int:
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
            raise_if_fenced(result, fence_epoch, f"publishing the snapshot at seq {seq}")
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

    async def published_seq(self) -> int:
        """The seq of the newest published snapshot; 0 when there is none."""
        pointer = _pointer_of(await self.etcd.get(self.keys.snapshot))
        return 0 if pointer is None else pointer.seq

    async def load(self) -> tuple[int, bytes] | None:
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
            if self.keys.seq_of(kv.key) + len(entries_of(self.keys, kv)) - 1 > through_seq:
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


def _unchanged(key: bytes, kv: KeyValue | None) -> Compare:
    return version_equals(key, 0) if kv is None else value_equals(key, kv.value)


def _pointer_of(kv: KeyValue | None) -> SnapshotPointer | None:
    return None if kv is None else msgspec.json.decode(kv.value, type=SnapshotPointer)
