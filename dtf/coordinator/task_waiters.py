"""Requests waiting for tasks to finish (``POST /api/tasks/wait``), woken by the
bus's events instead of polling: a client waiting on ten thousand tasks holds one
request open, not one per task per poll.

A bus subscriber: every applied batch of events is looked through for tasks that
reached a terminal status, and the requests waiting on them are told. Any node of a
cluster serves it, since every node applies every command.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from dtf.core.events import Event, TaskStatusChanged


class _Waiter:
    def __init__(self, task_ids: set[str]) -> None:
        self.unfinished = task_ids
        self.done = asyncio.Event()

    def finished(self, task_id: str) -> None:
        self.unfinished.discard(task_id)
        if not self.unfinished:
            self.done.set()


class TaskWaiters:
    def __init__(self) -> None:
        self._by_task: dict[str, list[_Waiter]] = {}

    def on_events(self, events: list[Event]) -> None:
        if not self._by_task:
            return
        for event in events:
            if isinstance(event, TaskStatusChanged) and event.new.is_terminal:
                for waiter in self._by_task.pop(event.task_id, ()):
                    waiter.finished(event.task_id)

    async def wait(self, unfinished: Iterable[str], timeout_s: float) -> None:
        """Return once none of ``unfinished`` (tasks not terminal now) is left
        unfinished, or after ``timeout_s``."""
        waiter = _Waiter(set(unfinished))
        if not waiter.unfinished:
            return
        for task_id in waiter.unfinished:
            self._by_task.setdefault(task_id, []).append(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.done.wait(), timeout_s)
        finally:
            self._forget(waiter)

    def _forget(self, waiter: _Waiter) -> None:
        for task_id in waiter.unfinished:
            waiting = self._by_task.get(task_id)
            if waiting is None:
                continue
            waiting.remove(waiter)
            if not waiting:
                del self._by_task[task_id]
