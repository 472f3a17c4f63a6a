"""Pure parts of the replicated log and its bus: key layout, batch splitting,
refusals, and applying one entry."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtf.cluster.bus import apply_entry
from dtf.cluster.etcd import KeyValue
from dtf.cluster.log import (
    MAX_ENTRY_BYTES,
    MAX_VALUE_BYTES,
    Leader,
    LogKeys,
    NotLeader,
    leader_of,
    split_batches,
)
from dtf.core import commands as c
from dtf.core.events import TaskAccepted
from dtf.core.state import State
from dtf.errors import InvalidRequest, NotFound
from dtf.testing.factories import task_spec


def test_keys_follow_the_documented_layout() -> None:
    keys = LogKeys.of("prod")
    assert keys.log(42) == b"/dtf/prod/log/0000000000000042"
    assert keys.seq_of(keys.log(42)) == 42
    assert keys.tail == b"/dtf/prod/tail"
    assert keys.leader == b"/dtf/prod/leader"
    assert keys.snapshot == b"/dtf/prod/snapshot"
    assert keys.chunk("7-ab", 3) == b"/dtf/prod/snapshots/7-ab/000003"


@settings(max_examples=40)
@given(st.lists(st.integers(0, MAX_ENTRY_BYTES), max_size=6))
def test_batches_keep_every_entry_in_order_and_fit_one_value(sizes: list[int]) -> None:
    entries = [index.to_bytes(2, "big") * (size // 2) for index, size in enumerate(sizes)]
    batches = split_batches(entries)
    assert [entry for batch in batches for entry in batch] == entries
    assert all(batch for batch in batches)
    assert all(len(msgspec.msgpack.encode(batch)) <= MAX_VALUE_BYTES for batch in batches)


def test_small_entries_share_one_batch() -> None:
    assert split_batches([b"a", b"b", b"c"]) == [[b"a", b"b", b"c"]]
    assert split_batches([]) == []


def test_an_entry_too_large_for_one_value_is_refused() -> None:
    with pytest.raises(InvalidRequest, match=f"over the {MAX_ENTRY_BYTES}-byte limit"):
        split_batches([b"a", b"x" * (MAX_ENTRY_BYTES + 1)])


def test_not_leader_names_the_leader_when_known() -> None:
    known = NotLeader("appending Tick", Leader("coord-b", "http://127.0.0.1:8081", 17))
    assert known.status_code == 409
    assert "the leader is coord-b at http://127.0.0.1:8081 (epoch 17)" in known.message
    unknown = NotLeader("appending Tick")
    assert unknown.status_code == 503
    assert "no leader is known" in unknown.message


def test_the_leader_epoch_is_the_key_create_revision() -> None:
    record = msgspec.json.encode({"node_id": "coord-a", "url": "http://a", "epoch": 3})
    kv = KeyValue(b"/dtf/p/leader", record, 41, 45, 2, 7)
    assert leader_of(kv) == Leader("coord-a", "http://a", 41)
    assert leader_of(None) is None


def test_a_rejected_entry_still_takes_its_seq() -> None:
    state = State()
    rejected = apply_entry(state, 1, c.CancelTask(1.0, "missing"))
    assert isinstance(rejected, NotFound)
    assert state.applied_seq == 1
    accepted = apply_entry(state, 2, c.SubmitTasks(2.0, [c.NewTask("t1", task_spec())]))
    assert not isinstance(accepted, Exception)
    assert [e.task_id for e in accepted if isinstance(e, TaskAccepted)] == ["t1"]
    assert state.applied_seq == 2
