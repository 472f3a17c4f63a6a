"""The layout of the replicated log in etcd: its keys, how entries are batched into
values, and the errors appending and reading it raise (see ``dtf.cluster.log``).

Import these from ``dtf.cluster.log``, which re-exports them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from dtf.cluster.etcd import KeyValue, TxnResult
from dtf.errors import DtfError, InvalidRequest

log = logging.getLogger(__name__)

MAX_VALUE_BYTES = 1 << 20
# msgpack spends at most 5 bytes on a bin header per entry and 5 on the list header
_ENTRY_OVERHEAD = 5
MAX_ENTRY_BYTES = MAX_VALUE_BYTES - 2 * _ENTRY_OVERHEAD

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


def encode_batch(batch: Sequence[bytes]) -> bytes:
    return _batch_encoder.encode(batch)


def entries_of(keys: LogKeys, kv: KeyValue) -> list[tuple[int, bytes]]:
    """The ``(seq, entry)`` pairs of one log key."""
    return list(enumerate(_batch_decoder.decode(kv.value), start=keys.seq_of(kv.key)))


def raise_if_fenced(result: TxnResult, epoch: int | None, action: str) -> None:
    """``NotLeader`` when a failed fenced txn's last get shows the leader key has moved on."""
    leader_kv = result.gets[-1]
    if epoch is not None and (leader_kv is None or leader_kv.create_revision != epoch):
        raise NotLeader(action, leader_of(leader_kv))
