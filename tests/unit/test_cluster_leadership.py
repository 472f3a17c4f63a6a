"""The pure side of leader election: keys, records, terms, the lease clock, node listings.

Times are plain numbers standing for ``time.monotonic()`` (lease clock) or
unix seconds (records).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf.cluster.etcd import (
    create_revision_equals,
    delete_op,
    put_op,
    value_equals,
    version_equals,
)
from dtf.cluster.history import (
    EXPIRED,
    CorruptRecord,
    LeaderInfo,
    LeaseClock,
    backoff_s,
    closing_txn,
    cluster_prefix,
    decode_leader,
    decode_term,
    disabled_key,
    encode_leader,
    encode_term,
    expired_terms,
    leader_key,
    oldest_kept_epoch,
    opening_txn,
    read_terms,
    term_key,
)
from dtf.cluster.members import (
    NodeRecord,
    decode_disabled,
    decode_node,
    encode_disabled,
    encode_node,
    node_infos,
)
from dtf.cluster.view import LeaderTerm

P = cluster_prefix("prod")
NEW = LeaderInfo("c", "http://c:8080", epoch=30, since=1000.0)


def term(epoch: int, ended_at: float | None = None, reason: str | None = None) -> LeaderTerm:
    return LeaderTerm(
        epoch, f"node-{epoch}", f"http://node-{epoch}:8080", 10.0 * epoch, ended_at, reason
    )


def test_keys_live_under_the_cluster_prefix() -> None:
    assert P == b"/dtf/prod/"
    assert leader_key(P) == b"/dtf/prod/leader"
    assert term_key(P, 42) == b"/dtf/prod/leaders/0000000000000042"
    assert disabled_key(P, "coord-a") == b"/dtf/prod/disabled/coord-a"


def test_term_keys_sort_by_epoch() -> None:
    assert sorted([term_key(P, 100), term_key(P, 99), term_key(P, 1000)]) == [
        term_key(P, 99),
        term_key(P, 100),
        term_key(P, 1000),
    ]


def test_leader_epoch_is_the_key_create_revision() -> None:
    value = encode_leader("a", "http://a:8080", 123.5)
    assert decode_leader(value, create_revision=77) == LeaderInfo("a", "http://a:8080", 77, 123.5)


@pytest.mark.parametrize(
    "value",
    [
        b"not json",  # garbage
        b"[1, 2]",  # JSON, but not an object
        b'{"node_id": "a", "url": "http://a"}',  # no since
        b'{"node_id": "a", "url": "http://a", "since": "soon"}',  # since not a number
    ],
)
def test_unreadable_leader_key_is_a_corrupt_record(value: bytes) -> None:
    with pytest.raises(CorruptRecord, match="leader key"):
        decode_leader(value, create_revision=5)


@pytest.mark.parametrize("record", [term(3), term(4, 55.0, "resigned: shutdown")])
def test_terms_round_trip(record: LeaderTerm) -> None:
    assert decode_term(encode_term(record)) == record


def test_unreadable_terms_are_skipped_with_the_reason() -> None:
    stored, skipped = read_terms([encode_term(term(3)), b"{}", encode_term(term(5))])
    assert sorted(stored) == [3, 5]
    assert stored[3] == (term(3), encode_term(term(3)))
    assert len(skipped) == 1 and "leadership record" in skipped[0]


@pytest.mark.parametrize(
    ("recorded", "predecessor", "closed"),
    [
        # the open term before the new one expired when the new one started
        ([term(20, 150.0, "resigned: shutdown"), term(25)], None, [(25, 1000.0, EXPIRED)]),
        # a term closed by its own leader stays as it was
        ([term(25, 260.0, "resigned: disabled")], None, []),
        # the predecessor died before recording its term: the successor records it
        (
            [term(20, 150.0, "resigned: shutdown")],
            LeaderInfo("b", "u", 25, 250.0),
            [(25, 1000.0, EXPIRED)],
        ),
        # a predecessor already recorded is closed once, not twice
        ([term(25)], LeaderInfo("node-25", "u", 25, 250.0), [(25, 1000.0, EXPIRED)]),
        # the new leader's own earlier sighting of itself is no predecessor
        ([], LeaderInfo("c", "http://c:8080", 30, 1000.0), []),
        # a term newer than the new one (impossible in etcd) is never closed by it
        ([term(40)], None, []),
    ],
)
def test_expired_terms(
    recorded: list[LeaderTerm],
    predecessor: LeaderInfo | None,
    closed: list[tuple[int, float, str]],
) -> None:
    terms = expired_terms(recorded, NEW, predecessor)
    assert [(t.epoch, t.ended_at, t.end_reason) for t in terms] == closed


def test_opening_txn_is_fenced_and_closes_only_unchanged_records() -> None:
    stored, _ = read_terms([encode_term(term(25))])
    predecessor = LeaderInfo("b", "http://b:8080", 28, 280.0)
    compare, puts = opening_txn(P, NEW, stored, predecessor)
    assert compare == [
        create_revision_equals(leader_key(P), 30),
        value_equals(term_key(P, 25), encode_term(term(25))),
        version_equals(term_key(P, 28), 0),
    ]
    assert [(op.kind, op.key) for op in puts] == [
        ("put", term_key(P, 30)),
        ("put", term_key(P, 25)),
        ("put", term_key(P, 28)),
    ]
    assert decode_term(puts[0].value) == NEW.as_term()
    assert decode_term(puts[2].value).end_reason == EXPIRED


def test_closing_txn_closes_the_term_and_frees_the_key_under_the_fence() -> None:
    compare, ops = closing_txn(P, NEW, at=1500.0, reason="resigned: disabled")
    closed = LeaderTerm(30, "c", "http://c:8080", 1000.0, 1500.0, "resigned: disabled")
    assert compare == [create_revision_equals(leader_key(P), 30)]
    assert ops == [put_op(term_key(P, 30), encode_term(closed)), delete_op(leader_key(P))]


@pytest.mark.parametrize(
    ("count", "keep", "oldest"),
    [
        (0, 100, None),  # nothing recorded
        (100, 100, None),  # exactly full
        (101, 100, 2),  # one too many: epoch 1 goes
        (105, 100, 6),
    ],
)
def test_oldest_kept_epoch(count: int, keep: int, oldest: int | None) -> None:
    assert oldest_kept_epoch(list(range(1, count + 1)), keep) == oldest


@given(st.sets(st.integers(1, 10**9), max_size=300), st.integers(1, 150))
def test_trimming_keeps_exactly_the_newest(epochs: set[int], keep: int) -> None:
    oldest = oldest_kept_epoch(list(epochs), keep)
    kept = epochs if oldest is None else {e for e in epochs if e >= oldest}
    assert kept == set(sorted(epochs)[-keep:])


def test_backoff_doubles_and_is_bounded() -> None:
    assert [backoff_s(n) for n in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert backoff_s(10_000) == 1.0
    assert backoff_s(3, max_s=0.3) == 0.3


def test_lease_clock_counts_from_when_the_refresh_was_sent() -> None:
    clock = LeaseClock(ttl_s=1.0)
    assert not clock.is_valid(0.0)
    clock.renewed(sent_at=10.0, remaining_ttl_s=1)
    # sure until 10.9 (10 % margin), however late the answer came
    assert clock.is_valid(10.89) and not clock.is_valid(10.9)
    assert clock.time_left_s(10.5) == pytest.approx(0.4)
    assert clock.time_left_s(11.0) == 0.0


def test_lease_clock_never_trusts_more_than_the_ttl_asked_for() -> None:
    clock = LeaseClock(ttl_s=1.0)
    clock.renewed(sent_at=10.0, remaining_ttl_s=2)  # etcd raised the TTL to its minimum
    assert not clock.is_valid(10.9)


def test_lease_clock_ignores_an_older_refresh_answered_late() -> None:
    clock = LeaseClock(ttl_s=1.0)
    clock.renewed(sent_at=10.0, remaining_ttl_s=1)
    clock.renewed(sent_at=9.5, remaining_ttl_s=1)
    assert clock.is_valid(10.85)


def test_lease_clock_is_lost_when_etcd_says_the_lease_is_gone() -> None:
    clock = LeaseClock(ttl_s=1.0)
    clock.renewed(sent_at=10.0, remaining_ttl_s=1)
    clock.renewed(sent_at=10.3, remaining_ttl_s=0)
    assert not clock.is_valid(10.31)


def record(node_id: str, applied_seq: int) -> NodeRecord:
    return NodeRecord(node_id, f"http://{node_id}:8080", applied_seq, 1.0, 2.0, "0.1.0")


def test_node_records_round_trip() -> None:
    assert decode_node(encode_node(record("a", 7))) == record("a", 7)
    with pytest.raises(CorruptRecord, match="node record"):
        decode_node(b'{"node_id": "a"}')


def test_disabled_flag_reason() -> None:
    assert decode_disabled(encode_disabled("kernel upgrade", 5.0)) == "kernel upgrade"
    assert decode_disabled(b"set by hand") == "set by hand"  # written with etcdctl


@pytest.mark.parametrize(
    ("log_seq", "lags"),
    [
        (0, {"a": 5, "b": 0, "c": 9}),  # no tail given: lag behind the furthest node
        (20, {"a": 15, "b": 10, "c": 19}),  # behind the log tail
    ],
)
def test_node_infos(log_seq: int, lags: dict[str, int]) -> None:
    records = [record("c", 1), record("a", 5), record("b", 10)]
    nodes = node_infos(records, {"c": "disk swap"}, leader_id="b", log_seq=log_seq)
    assert [n.node_id for n in nodes] == ["a", "b", "c"]
    assert {n.node_id: n.lag for n in nodes} == lags
    assert [n.role for n in nodes] == ["follower", "leader", "follower"]
    assert [(n.enabled, n.disabled_reason, n.healthy) for n in nodes] == [
        (True, None, True),
        (True, None, True),
        (False, "disk swap", False),
    ]
