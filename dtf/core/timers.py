"""A heap of pending timers: lease expiries, delayed retries, requirement fallbacks.

Entries are never removed when they become moot (a lease renewed, a task
cancelled); the state checks each popped entry against the record it names
and ignores stale ones. Ties are broken by kind, then the task's submission
sequence, then the token: never by insertion order, so a state restored from
a snapshot fires simultaneous timers in the same order as the live one.
"""

from __future__ import annotations

import enum
import heapq


class TimerKind(enum.IntEnum):
    LEASE = 1
    RETRY = 2
    FALLBACK = 3


class Timer(tuple[float, TimerKind, int, int, str]):
    """(due, kind, task seq, token, task id): ``token`` is a fence, attempt or stage."""

    __slots__ = ()

    @property
    def due(self) -> float:
        return self[0]

    @property
    def kind(self) -> TimerKind:
        return self[1]

    @property
    def token(self) -> int:
        return self[3]

    @property
    def task_id(self) -> str:
        return self[4]


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[Timer] = []

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, kind: TimerKind, seq: int, task_id: str, token: int) -> None:
        heapq.heappush(self._heap, Timer((due, kind, seq, token, task_id)))

    def peek(self) -> Timer | None:
        return self._heap[0] if self._heap else None

    def pop_due(self, now: float) -> Timer | None:
        if self._heap and self._heap[0].due <= now:
            return heapq.heappop(self._heap)
        return None

    def discard_top(self) -> None:
        heapq.heappop(self._heap)
