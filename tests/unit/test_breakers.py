"""Circuit breakers: transitions, the single half-open probe, the per-worker and
per-hardware container, and snapshot encoding."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf.core.breakers import (
    BREAKER_TRANSITIONS,
    BreakerChange,
    Breakers,
    BreakerState,
    CircuitBreaker,
)
from dtf.core.model import HardwareClass
from dtf.errors import InvalidTransition

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
Event = tuple[str, float]


def play(events: list[Event], threshold: int = 3, reset_time_s: float = 100.0) -> CircuitBreaker:
    breaker = CircuitBreaker("worker w1", threshold=threshold, reset_time_s=reset_time_s)
    for name, now in events:
        getattr(breaker, f"on_{name}")(now)
    return breaker


SEQUENCES: list[tuple[list[Event], BreakerState, float, bool]] = [
    # a fresh breaker is closed and lets work through
    ([], CLOSED, 0.0, True),
    # two failures stay under the threshold of 3
    ([("failure", 1), ("failure", 2)], CLOSED, 3.0, True),
    # the third consecutive failure opens it
    ([("failure", 1), ("failure", 2), ("failure", 3)], OPEN, 3.0, False),
    # a success in between resets the count
    ([("failure", 1), ("failure", 2), ("success", 3), ("failure", 4)], CLOSED, 5.0, True),
    # still open just before the reset time has passed
    ([("failure", 1), ("failure", 2), ("failure", 3)], OPEN, 102.9, False),
    # after the reset time it admits a probe, though it is still open
    ([("failure", 1), ("failure", 2), ("failure", 3)], OPEN, 103.0, True),
    # a late failure while open pushes the probe back
    ([("failure", 1), ("failure", 2), ("failure", 3), ("failure", 50)], OPEN, 103.0, False),
    # a success while open (work sent before it opened) does not close it
    ([("failure", 1), ("failure", 2), ("failure", 3), ("success", 50)], OPEN, 60.0, False),
    # the probe is dispatched: half-open, nothing else goes
    ([("failure", 1), ("failure", 2), ("failure", 3), ("dispatch", 110)], HALF_OPEN, 110.0, False),
    # the probe succeeds: closed
    ([("failure", 1), ("failure", 2), ("failure", 3), ("dispatch", 110), ("success", 120)], CLOSED, 120.0, True),
    # the probe fails: open again, for a full reset time
    ([("failure", 1), ("failure", 2), ("failure", 3), ("dispatch", 110), ("failure", 120)], OPEN, 219.0, False),
    # ... after which another probe may go
    ([("failure", 1), ("failure", 2), ("failure", 3), ("dispatch", 110), ("failure", 120)], OPEN, 220.0, True),
    # a probe that never reports is given up after a reset time
    ([("failure", 1), ("failure", 2), ("failure", 3), ("dispatch", 110)], HALF_OPEN, 210.0, True),
    # dispatching while closed changes nothing
    ([("dispatch", 1), ("dispatch", 2)], CLOSED, 3.0, True),
    # dispatching to an open breaker before its time is ignored
    ([("failure", 1), ("failure", 2), ("failure", 3), ("dispatch", 50)], OPEN, 50.0, False),
    # after closing, the count starts from zero
    ([("failure", 1), ("failure", 2), ("failure", 3), ("dispatch", 110), ("success", 120), ("failure", 121), ("failure", 122)], CLOSED, 123.0, True),
]  # fmt: skip


@pytest.mark.parametrize(("events", "state", "now", "allows"), SEQUENCES)
def test_breaker_sequences(
    events: list[Event], state: BreakerState, now: float, allows: bool
) -> None:
    breaker = play(events)
    assert (breaker.state, breaker.allows(now)) == (state, allows)


def test_threshold_one_opens_on_the_first_failure() -> None:
    assert play([("failure", 5)], threshold=1).state is OPEN


CHANGES = [
    # opening names the count and the threshold
    (
        [("failure", 1), ("failure", 2), ("failure", 3)],
        BreakerChange("worker w1", CLOSED, OPEN, 3.0, "3 consecutive failures (threshold 3)"),
    ),
    # the probe
    (
        [("failure", 1), ("failure", 2), ("failure", 3), ("dispatch", 150)],
        BreakerChange("worker w1", OPEN, HALF_OPEN, 150.0, "probe sent after 147s open"),
    ),
    # the probe's success
    (
        [("failure", 1), ("failure", 2), ("failure", 3), ("dispatch", 150), ("success", 151)],
        BreakerChange("worker w1", HALF_OPEN, CLOSED, 151.0, "the probe succeeded"),
    ),
    # a failure while half-open
    (
        [("failure", 1), ("failure", 2), ("failure", 3), ("dispatch", 150), ("failure", 151)],
        BreakerChange("worker w1", HALF_OPEN, OPEN, 151.0, "a failure while half-open"),
    ),
]


@pytest.mark.parametrize(("events", "change"), CHANGES)
def test_changes_are_reported(events: list[Event], change: BreakerChange) -> None:
    breaker = play(events[:-1])
    name, now = events[-1]
    assert getattr(breaker, f"on_{name}")(now) == change


ILLEGAL = [
    # closed cannot go straight to half-open
    (CLOSED, HALF_OPEN),
    # open closes only through a probe
    (OPEN, CLOSED),
    # no move to the same state
    (OPEN, OPEN),
]


@pytest.mark.parametrize(("start", "target"), ILLEGAL)
def test_illegal_moves_are_named(start: BreakerState, target: BreakerState) -> None:
    breaker = CircuitBreaker("hardware cuda", state=start)
    with pytest.raises(InvalidTransition, match=f"hardware cuda is {start}; it cannot become"):
        breaker.move_to(target, 1.0, "test")


def test_breakers_keep_workers_and_hardware_apart() -> None:
    breakers = Breakers(threshold=2, reset_time_s=10.0)
    cuda, cpu = HardwareClass.CUDA, HardwareClass.CPU
    breakers.on_failure(1.0, worker_id="w1", hardware_class=None)
    changes = breakers.on_failure(2.0, worker_id="w1", hardware_class=cuda)
    assert [(c.breaker, c.new) for c in changes] == [("worker w1", OPEN)]
    assert not breakers.allows(3.0, worker_id="w1", hardware_class=cpu)
    assert breakers.allows(3.0, worker_id="w2", hardware_class=cuda)
    breakers.on_failure(4.0, worker_id=None, hardware_class=cuda)
    assert not breakers.allows(5.0, worker_id="w2", hardware_class=cuda)
    assert breakers.allows(5.0, worker_id="w2", hardware_class=cpu)


def test_breakers_probe_and_close() -> None:
    breakers = Breakers(threshold=1, reset_time_s=10.0)
    breakers.on_failure(0.0, worker_id="w1", hardware_class=HardwareClass.TPU)
    assert breakers.allows(10.0, worker_id="w1", hardware_class=HardwareClass.TPU)
    probes = breakers.on_dispatch(10.0, worker_id="w1", hardware_class=HardwareClass.TPU)
    assert [c.new for c in probes] == [HALF_OPEN, HALF_OPEN]
    assert not breakers.allows(10.0, worker_id="w1", hardware_class=HardwareClass.TPU)
    closed = breakers.on_success(11.0, worker_id="w1", hardware_class=HardwareClass.TPU)
    assert [c.breaker for c in closed] == ["worker w1", "hardware tpu"]


def test_success_and_dispatch_create_no_breakers() -> None:
    breakers = Breakers()
    breakers.on_success(1.0, worker_id="w1", hardware_class=HardwareClass.CPU)
    breakers.on_dispatch(1.0, worker_id="w1", hardware_class=HardwareClass.CPU)
    assert breakers.allows(1.0, worker_id="w1", hardware_class=HardwareClass.CPU)
    assert (breakers.workers, breakers.hardware) == ({}, {})


# -- properties -----------------------------------------------------------------

events = st.lists(
    st.tuples(st.sampled_from(["failure", "success", "dispatch"]), st.floats(0.0, 50.0)),
    max_size=40,
)


def timeline(steps: list[tuple[str, float]]) -> list[Event]:
    """Event names with non-decreasing times built from gaps."""
    now, result = 0.0, []
    for name, gap in steps:
        now += gap
        result.append((name, now))
    return result


@given(events, st.integers(1, 5), st.floats(0.0, 100.0))
def test_breaker_invariants(steps: list[tuple[str, float]], threshold: int, reset: float) -> None:
    breaker = CircuitBreaker("w", threshold=threshold, reset_time_s=reset)
    for name, now in timeline(steps):
        old = breaker.state
        change = getattr(breaker, f"on_{name}")(now)
        assert breaker.state is old or breaker.state in BREAKER_TRANSITIONS[old]
        assert (change is not None) == (breaker.state is not old)
        if breaker.state is CLOSED:
            assert breaker.consecutive_failures < threshold
            assert breaker.allows(now)


@given(events, st.floats(0.0, 100.0), st.integers(2, 6))
def test_half_open_lets_exactly_one_probe_through(
    steps: list[tuple[str, float]], gap: float, askers: int
) -> None:
    """However many assignments ask at one moment, an open breaker sends one probe."""
    breaker = play([*timeline(steps), ("failure", 1e6)], threshold=1, reset_time_s=50.0)
    now = 1e6 + 50.0 + gap
    sent = 0
    for _ in range(askers):
        if breaker.allows(now):
            breaker.on_dispatch(now)
            sent += 1
    assert sent == 1
    assert breaker.state is HALF_OPEN


@given(events)
def test_breakers_encode_for_the_snapshot(steps: list[tuple[str, float]]) -> None:
    breakers = Breakers(threshold=2, reset_time_s=5.0)
    for index, (name, now) in enumerate(timeline(steps)):
        worker, hardware = f"w{index % 3}", list(HardwareClass)[index % 4]
        getattr(breakers, f"on_{name}")(now, worker_id=worker, hardware_class=hardware)
    encoded = msgspec.msgpack.encode(breakers)
    assert msgspec.msgpack.decode(encoded, type=Breakers) == breakers
