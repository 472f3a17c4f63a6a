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
``P`` is ``/dtf/<cluster>``. The keys, batches and errors are in
``dtf.cluster.log_format``, snapshots in ``dtf.cluster.log_snapshots``; import
from here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from dtf.cluster.etcd import (
    Compare,
    Etcd,
    EtcdUnavailable,
    KeyValue,
    Op,
    create_revision_equals,
    get_op,
    put_op,
    value_equals,
    version_equals,
)
from dtf.cluster.log_format import (
    MAX_ENTRY_BYTES,
    MAX_VALUE_BYTES,
    Leader,
    LogCompacted,
    LogKeys,
    NotLeader,
    TailMoved,
    check_entry,
    encode_batch,
    entries_of,
    leader_of,
    raise_if_fenced,
    split_batches,
)
from dtf.cluster.log_snapshots import SnapshotCorrupt, SnapshotPointer, Snapshots

__all__ = [
    "MAX_ENTRY_BYTES",
    "MAX_VALUE_BYTES",
    "EtcdLog",
    "Leader",
    "LogCompacted",
    "LogKeys",
    "NotLeader",
    "SnapshotCorrupt",
    "SnapshotPointer",
    "TailMoved",
    "check_entry",
    "leader_of",
    "split_batches",
]

SAME_APPEND_TRIES = 3


class EtcdLog:
    """The journal of one cluster in etcd (see the module docstring)."""

    def __init__(self, etcd: Etcd, cluster: str) -> None:
        self.etcd = etcd
        self.cluster = cluster
        self.keys = LogKeys.of(cluster)
        self._snapshots = Snapshots(etcd, self.keys, cluster)

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
            for seq, entry in entries_of(self.keys, kv):
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
                    for entry in entries_of(self.keys, event.kv)
                ]
                if entries:
                    yield entries

    async def save_snapshot(self, seq: int, data: bytes, *, fence_epoch: int | None) -> int:
        """Publish ``data`` (the state after entry ``seq``), then delete the log
        keys and snapshot chunks it makes obsolete; return the seq of the newest
        published snapshot (``seq``, or a later one another coordinator published).
        ``NotLeader`` when ``fence_epoch`` is no longer the leader's."""
        return await self._snapshots.save(seq, data, fence_epoch=fence_epoch)

    async def published_snapshot_seq(self) -> int:
        """The seq of the newest published snapshot; 0 when there is none."""
        return await self._snapshots.published_seq()

    async def load_snapshot(self) -> tuple[int, bytes] | None:
        """The newest snapshot as ``(seq, data)``, checked against its sha256, or None."""
        return await self._snapshots.load()

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
            raise_if_fenced(result, epoch, f"appending with fencing epoch {epoch}")
            raise TailMoved(expected_tail, _tail_value(result.gets[0]))
        raise EtcdUnavailable(
            f"appending seqs {expected_tail + 1}..{txn.last_seq} to cluster {self.cluster}: "
            f"etcd did not answer {SAME_APPEND_TRIES} times; the entries may have been appended",
            maybe_committed=True,
        )

    def _append_txn(self, batch: list[bytes], expected_tail: int, epoch: int | None) -> _AppendTxn:
        """Put the batch and the new tail if the tail is ``expected_tail`` (and the
        leader's epoch is ``epoch``); otherwise get the tail and the leader."""
        value = encode_batch(batch)
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

    def _compacted(self, after_seq: int) -> LogCompacted:
        return LogCompacted(
            f"the log of cluster {self.cluster} no longer holds the entries after seq "
            f"{after_seq} (a snapshot covers them); load the snapshot and read after its seq",
            field="after_seq",
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
