"""An append whose reply was lost is settled by reading its batch key back and sending
the same compare-on-tail transaction again, which lands at most once.

``LossyEtcd`` is an in-memory stand-in for the two calls an append makes (``txn`` and
``get``), whose transactions can be applied and then have their reply lost, as when the
etcd member that forwarded them dies."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

import pytest

from dtf.cluster.etcd import Compare, Etcd, EtcdUnavailable, KeyValue, Op, TxnResult
from dtf.cluster.log import EtcdLog, TailMoved
from dtf.cluster.log_format import encode_batch


class LossyEtcd:
    def __init__(self) -> None:
        self.data: dict[bytes, KeyValue] = {}
        self.revision = 0
        self.txns = 0
        # one per coming txn: (apply it, lose its reply); then txns are answered normally
        self.script: list[tuple[bool, bool]] = []
        # txn number (from 1) -> puts another writer makes just before it
        self.others_before: dict[int, list[tuple[bytes, bytes]]] = {}

    async def get(self, key: bytes) -> KeyValue | None:
        return self.data.get(key)

    async def txn(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self.txns += 1
        for key, value in self.others_before.pop(self.txns, []):
            self._put(key, value)
        apply, lose = self.script.pop(0) if self.script else (True, False)
        result = self._run(compare, success, failure) if apply else None
        if lose:
            raise EtcdUnavailable("the reply was lost", maybe_committed=True)
        return result or self._run(compare, success, failure)

    def _run(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
    ) -> TxnResult:
        succeeded = all(self._holds(item) for item in compare)
        gets: list[KeyValue | None] = []
        for op in success if succeeded else failure:
            if op.kind == "put":
                self._put(op.key, op.value)
            elif op.kind == "get":
                gets.append(self.data.get(op.key))
        return TxnResult(succeeded, self.revision, gets)

    def _holds(self, compare: Compare) -> bool:
        kv = self.data.get(compare.key)
        if compare.target == "VERSION":
            return (0 if kv is None else kv.version) == compare.expected
        if compare.target == "VALUE":
            return kv is not None and kv.value == compare.expected
        return (0 if kv is None else kv.create_revision) == compare.expected

    def _put(self, key: bytes, value: bytes) -> None:
        self.revision += 1
        old = self.data.get(key)
        created = self.revision if old is None else old.create_revision
        version = 1 if old is None else old.version + 1
        self.data[key] = KeyValue(key, value, created, self.revision, version, 0)


def append(etcd: LossyEtcd, entries: list[bytes], expected_tail: int) -> int:
    log = EtcdLog(cast(Etcd, etcd), "unit")
    return asyncio.run(log.append(entries, expected_tail=expected_tail, fence_epoch=None))


def log_keys(etcd: LossyEtcd) -> list[bytes]:
    return sorted(key for key in etcd.data if b"/log/" in key)


def test_an_append_applied_but_unanswered_counts_once() -> None:
    etcd = LossyEtcd()
    etcd.script = [(True, True)]
    assert append(etcd, [b"a", b"b"], 0) == 2
    assert etcd.txns == 1
    assert etcd.data[b"/dtf/unit/tail"].value == b"2"
    assert log_keys(etcd) == [b"/dtf/unit/log/0000000000000001"]


def test_an_append_lost_before_it_was_applied_is_sent_again_and_lands_once() -> None:
    etcd = LossyEtcd()
    etcd.script = [(False, True)]
    assert append(etcd, [b"a"], 0) == 1
    assert etcd.txns == 2
    assert etcd.data[b"/dtf/unit/tail"].value == b"1"


def test_a_resent_append_whose_first_send_landed_late_is_not_applied_twice() -> None:
    """The first send commits only after the read-back found nothing (a slow commit):
    the re-sent transaction's tail compare fails, and the read-back then finds it."""
    etcd = LossyEtcd()
    key = b"/dtf/unit/log/0000000000000001"
    etcd.script = [(False, True)]
    etcd.others_before = {2: [(key, encode_batch([b"a"])), (b"/dtf/unit/tail", b"1")]}
    assert append(etcd, [b"a"], 0) == 1
    assert etcd.txns == 2
    tail = etcd.data[b"/dtf/unit/tail"]
    assert tail.value == b"1" and tail.version == 1
    assert log_keys(etcd) == [key]


def test_a_lost_append_that_another_writer_overtook_reports_the_moved_tail() -> None:
    etcd = LossyEtcd()
    assert append(etcd, [b"mine"], 0) == 1
    other = b"/dtf/unit/log/0000000000000002"
    etcd.script = [(False, True)]
    etcd.others_before = {3: [(other, b"other"), (b"/dtf/unit/tail", b"2")]}
    with pytest.raises(TailMoved) as moved:
        append(etcd, [b"late"], 1)
    assert moved.value.actual_tail == 2
    assert etcd.data[other].value == b"other"
