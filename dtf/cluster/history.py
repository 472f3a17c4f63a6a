"""Leadership as plain data: etcd keys, the leader record, terms, the lease clock, backoff.

How this works: the leader of cluster ``P = /dtf/<cluster>/`` is whoever holds
``P/leader``, a key attached to that node's lease; its *epoch* is the key's
create revision, so it grows with every term and is never written in the value.
Each term is also recorded under ``P/leaders/<epoch:016d>``: the new leader
writes its own record and closes the terms still open before it ("lease
expired": their leader vanished without resigning); a leader that resigns
closes its own. Only the newest ``HISTORY_KEEP`` records are kept.

A leader is only sure its lease lives until ``LeaseClock.valid_until``: the
time it *sent* its last successful refresh plus the TTL less a margin, by its
own monotonic clock. etcd expires the lease no earlier than that, so a leader
that steps down then has stopped before any other node can be elected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from dtf.cluster.etcd import (
    Compare,
    Op,
    create_revision_equals,
    delete_op,
    put_op,
    value_equals,
    version_equals,
)
from dtf.cluster.view import LeaderTerm
from dtf.errors import DtfError

HISTORY_KEEP = 100
LEASE_SAFETY_MARGIN = 0.1
EXPIRED = "lease expired"


def cluster_prefix(cluster: str) -> bytes:
    return f"/dtf/{cluster}/".encode()


def leader_key(prefix: bytes) -> bytes:
    return prefix + b"leader"


def terms_prefix(prefix: bytes) -> bytes:
    return prefix + b"leaders/"


def term_key(prefix: bytes, epoch: int) -> bytes:
    return terms_prefix(prefix) + f"{epoch:016d}".encode()


def disabled_key(prefix: bytes, node_id: str) -> bytes:
    return prefix + b"disabled/" + node_id.encode()


class CorruptRecord(DtfError):
    status_code = 500


class RecordsChanged(DtfError):
    """Leadership records changed between reading and rewriting them; read them again."""

    status_code = 409


@dataclass(frozen=True)
class LeaderInfo:
    """The current leader: who, where, its epoch, and since when (unix seconds)."""

    node_id: str
    url: str
    epoch: int
    since: float

    def as_term(self) -> LeaderTerm:
        return LeaderTerm(self.epoch, self.node_id, self.url, self.since, None, None)


def encode_leader(node_id: str, url: str, since: float) -> bytes:
    return json.dumps({"node_id": node_id, "url": url, "since": since}).encode()


def decode_leader(value: bytes, create_revision: int) -> LeaderInfo:
    """The leader key's value and create revision (its epoch) as a ``LeaderInfo``."""
    data = _json_object(value, "leader key")
    try:
        return LeaderInfo(
            str(data["node_id"]), str(data["url"]), create_revision, float(data["since"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptRecord(f"leader key {data!r} lacks a valid {exc}; delete it") from None


def encode_term(term: LeaderTerm) -> bytes:
    return json.dumps(
        {
            "epoch": term.epoch,
            "node_id": term.node_id,
            "url": term.url,
            "started_at": term.started_at,
            "ended_at": term.ended_at,
            "end_reason": term.end_reason,
        }
    ).encode()


def decode_term(value: bytes) -> LeaderTerm:
    data = _json_object(value, "leadership record")
    try:
        ended_at = data["ended_at"]
        reason = data["end_reason"]
        return LeaderTerm(
            epoch=int(data["epoch"]),
            node_id=str(data["node_id"]),
            url=str(data["url"]),
            started_at=float(data["started_at"]),
            ended_at=None if ended_at is None else float(ended_at),
            end_reason=None if reason is None else str(reason),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptRecord(f"leadership record {data!r} lacks a valid {exc}") from None


def _json_object(value: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptRecord(f"{what} {value[:80]!r} is not JSON") from None
    if not isinstance(data, dict):
        raise CorruptRecord(f"{what} {value[:80]!r} is not a JSON object")
    return data


def ended(term: LeaderTerm, at: float, reason: str) -> LeaderTerm:
    return replace(term, ended_at=at, end_reason=reason)


def expired_terms(
    terms: list[LeaderTerm], new: LeaderInfo, predecessor: LeaderInfo | None
) -> list[LeaderTerm]:
    """The terms before ``new`` to close as expired when ``new`` starts.

    Those recorded and still open, and the ``predecessor`` the new leader saw
    lead if it died before recording its own term.
    """
    closing = [
        ended(t, new.since, EXPIRED) for t in terms if t.ended_at is None and t.epoch < new.epoch
    ]
    is_unrecorded = predecessor is not None and predecessor.epoch not in {t.epoch for t in terms}
    if predecessor is not None and is_unrecorded and predecessor.epoch < new.epoch:
        closing.append(ended(predecessor.as_term(), new.since, EXPIRED))
    return closing


StoredTerms = dict[int, tuple[LeaderTerm, bytes]]
"""Recorded terms by epoch, each with the value etcd holds (compared before it is replaced)."""


def read_terms(values: Iterable[bytes]) -> tuple[StoredTerms, list[str]]:
    """The readable terms among stored ``values``, and why the others were skipped."""
    stored: StoredTerms = {}
    skipped: list[str] = []
    for value in values:
        try:
            term = decode_term(value)
        except CorruptRecord as exc:
            skipped.append(exc.message)
            continue
        stored[term.epoch] = (term, value)
    return stored, skipped


def opening_txn(
    prefix: bytes, term: LeaderInfo, stored: StoredTerms, predecessor: LeaderInfo | None
) -> tuple[list[Compare], list[Op]]:
    """How a new leader records ``term``: fenced by its epoch, closing the expired terms
    before it unless someone changed their records since they were read."""
    closing = expired_terms([t for t, _ in stored.values()], term, predecessor)
    compare = [create_revision_equals(leader_key(prefix), term.epoch)]
    for t in closing:
        key = term_key(prefix, t.epoch)
        is_stored = t.epoch in stored
        compare.append(
            value_equals(key, stored[t.epoch][1]) if is_stored else version_equals(key, 0)
        )
    puts = [put_op(term_key(prefix, t.epoch), encode_term(t)) for t in [term.as_term(), *closing]]
    return compare, puts


def closing_txn(
    prefix: bytes, term: LeaderInfo, at: float, reason: str
) -> tuple[list[Compare], list[Op]]:
    """How a resigning leader closes ``term`` and frees the leader key, fenced by its epoch."""
    closed = ended(term.as_term(), at, reason)
    record = put_op(term_key(prefix, term.epoch), encode_term(closed))
    return [create_revision_equals(leader_key(prefix), term.epoch)], [
        record,
        delete_op(leader_key(prefix)),
    ]


def oldest_kept_epoch(epochs: list[int], keep: int = HISTORY_KEEP) -> int | None:
    """The oldest epoch among the newest ``keep``, or None when nothing needs trimming."""
    if len(epochs) <= keep:
        return None
    return sorted(epochs)[-keep]


def backoff_s(failures: int, *, max_s: float = 1.0, first_s: float = 0.05) -> float:
    """Delay before retrying etcd after ``failures`` failures in a row: doubling, bounded."""
    return min(max_s, first_s * 2.0 ** min(failures, 16))


class LeaseClock:
    """Until when this node is sure its lease lives, by its own monotonic clock."""

    def __init__(self, ttl_s: float, safety_margin: float = LEASE_SAFETY_MARGIN) -> None:
        self.ttl_s = ttl_s
        self.safety_margin = safety_margin
        self.valid_until = -math.inf

    def renewed(self, sent_at: float, remaining_ttl_s: float) -> None:
        """A grant or refresh sent at ``sent_at`` answered with ``remaining_ttl_s`` (0: gone)."""
        if remaining_ttl_s <= 0:
            self.lost()
            return
        ttl_s = min(remaining_ttl_s, self.ttl_s) * (1 - self.safety_margin)
        self.valid_until = max(self.valid_until, sent_at + ttl_s)

    def lost(self) -> None:
        self.valid_until = -math.inf

    def is_valid(self, now: float) -> bool:
        return now < self.valid_until

    def time_left_s(self, now: float) -> float:
        return max(0.0, self.valid_until - now)
