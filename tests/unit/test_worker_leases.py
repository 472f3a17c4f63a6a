"""The worker's lease table: renewal, self-fencing deadlines, what it reports as held.

Times are plain numbers standing for ``time.monotonic()`` readings.
"""

from __future__ import annotations

import threading

import pytest

from dtf.core.model import LeaseRef
from dtf.worker.leases import LeaseTable

A = LeaseRef("task-a", 1, 10)
B = LeaseRef("task-b", 1, 11)
TIMEOUT_S = 10.0  # with the default 10% margin, a lease is fenced 9 s after renewal


@pytest.fixture
def table() -> LeaseTable:
    leases = LeaseTable()
    leases.add(A, now=100.0, timeout_s=TIMEOUT_S)
    leases.set_process(A, 4242)
    return leases


def test_running_lease_is_fenced_at_timeout_minus_margin(table: LeaseTable) -> None:
    assert table.next_deadline() == pytest.approx(109.0)
    assert table.fence_expired(now=108.9) == []
    fenced = table.fence_expired(now=109.0)
    assert [(f.lease, f.pgid) for f in fenced] == [(A, 4242)]
    assert "not renewed for 9.0s" in fenced[0].reason
    assert table.held() == ([], 10)
    assert table.next_deadline() is None


def test_renewal_counts_from_when_the_heartbeat_was_sent(table: LeaseTable) -> None:
    # sent at 105, answered much later: the deadline moves to 105 + 9, not answer + 9
    assert table.renew([A], [A], sent_at=105.0, timeout_s=TIMEOUT_S) == []
    assert table.next_deadline() == pytest.approx(114.0)
    assert table.fence_expired(now=113.9) == []
    assert [f.lease for f in table.fence_expired(now=114.0)] == [A]


def test_an_older_heartbeat_answered_late_does_not_move_the_deadline_back(
    table: LeaseTable,
) -> None:
    table.renew([A], [A], sent_at=106.0, timeout_s=TIMEOUT_S)
    table.renew([A], [A], sent_at=104.0, timeout_s=TIMEOUT_S)
    assert table.next_deadline() == pytest.approx(115.0)


def test_reply_lease_timeout_replaces_the_assigned_one(table: LeaseTable) -> None:
    table.renew([A], [A], sent_at=100.0, timeout_s=20.0)
    assert table.next_deadline() == pytest.approx(118.0)


def test_running_lease_the_coordinator_did_not_renew_is_fenced_at_once(table: LeaseTable) -> None:
    table.add(B, now=100.0, timeout_s=TIMEOUT_S)
    fenced = table.renew([A, B], [B], sent_at=101.0, timeout_s=TIMEOUT_S)
    assert [(f.lease, f.pgid) for f in fenced] == [(A, 4242)]
    assert "no longer holds" in fenced[0].reason
    assert table.held()[0] == [B]


def test_lease_added_after_the_heartbeat_was_built_is_untouched(table: LeaseTable) -> None:
    table.add(B, now=102.0, timeout_s=TIMEOUT_S)
    assert table.renew([A], [A], sent_at=101.0, timeout_s=TIMEOUT_S) == []
    assert table.held()[0] == [A, B]


def test_finished_attempt_stays_held_but_is_never_fenced(table: LeaseTable) -> None:
    assert table.finish(A) is True
    assert table.next_deadline() is None
    assert table.fence_expired(now=1_000.0) == []
    assert table.renew([A], [], sent_at=101.0, timeout_s=TIMEOUT_S) == []
    assert table.held() == ([A], 10)
    assert table.remove(A) is True
    assert table.held() == ([], 10)


def test_finish_after_drop_says_the_outcome_must_not_be_reported(table: LeaseTable) -> None:
    table.fence_expired(now=200.0)
    assert table.finish(A) is False
    assert table.remove(A) is False


def test_max_fence_seen_includes_refused_assignments() -> None:
    table = LeaseTable()
    table.see_fence(7)
    table.add(LeaseRef("t", 1, 5), now=0.0, timeout_s=TIMEOUT_S)
    table.see_fence(3)
    assert table.held() == ([LeaseRef("t", 1, 5)], 7)


def test_earliest_deadline_among_running_leases(table: LeaseTable) -> None:
    table.add(B, now=95.0, timeout_s=TIMEOUT_S)
    assert table.next_deadline() == pytest.approx(104.0)
    table.finish(B)
    assert table.next_deadline() == pytest.approx(109.0)


def test_process_group_is_forgotten_when_the_process_ends(table: LeaseTable) -> None:
    table.set_process(A, None)
    assert [f.pgid for f in table.fence_expired(now=200.0)] == [None]


def test_waiting_for_a_deadline_already_due_returns_at_once(table: LeaseTable) -> None:
    table.wait_for_deadline(lambda: 500.0, max_wait_s=60.0)
    assert [f.lease for f in table.fence_expired(now=500.0)] == [A]


def test_a_new_lease_wakes_the_watchdog_waiting_with_none() -> None:
    table = LeaseTable()
    waiter = threading.Thread(target=table.wait_for_deadline, args=(lambda: 0.0, 60.0))
    waiter.start()
    for _ in range(200):  # the first add may land before the waiter waits; add again
        table.add(A, now=0.0, timeout_s=TIMEOUT_S)
        waiter.join(timeout=0.05)
        if not waiter.is_alive():
            break
    assert not waiter.is_alive()


def test_a_lease_due_after_the_watchdog_wakes_anyway_lets_it_sleep() -> None:
    table = LeaseTable()
    waiter = threading.Thread(target=table.wait_for_deadline, args=(lambda: 0.0, 60.0))
    waiter.start()
    try:
        for _ in range(20):  # give the waiter time to wait; it would wake at 60.0 by itself
            table.add(A, now=0.0, timeout_s=100.0)  # due at 90.0
            waiter.join(timeout=0.01)
        assert waiter.is_alive()
        table.add(B, now=0.0, timeout_s=1.0)  # due at 0.9, before 60.0: wake it
        waiter.join(timeout=5.0)
        assert not waiter.is_alive()
    finally:
        table.wake()
        waiter.join(timeout=5.0)
