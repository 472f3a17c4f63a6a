"""TaskWaiters: a request waiting on tasks is woken by the events that finish them."""

from __future__ import annotations

import asyncio

from dtf.coordinator.task_waiters import TaskWaiters
from dtf.core.events import TaskStatusChanged
from dtf.core.records import TaskStatus

RUNNING, COMPLETED, FAILED = TaskStatus.RUNNING, TaskStatus.COMPLETED, TaskStatus.FAILED


def finished(task_id: str, status: TaskStatus = COMPLETED) -> TaskStatusChanged:
    return TaskStatusChanged(task_id, RUNNING, status)


def test_a_wait_ends_once_every_task_finished() -> None:
    async def scenario() -> list[str]:
        waiters = TaskWaiters()
        seen: list[str] = []
        waiting = asyncio.create_task(waiters.wait(["a", "b"], timeout_s=60))
        await asyncio.sleep(0)
        waiters.on_events([finished("a"), TaskStatusChanged("b", TaskStatus.PENDING, RUNNING)])
        await asyncio.sleep(0)
        seen.append("done" if waiting.done() else "waiting")
        waiters.on_events([finished("b", FAILED)])
        await asyncio.wait_for(waiting, 10)
        seen.append("done")
        assert not waiters._by_task
        return seen

    assert asyncio.run(scenario()) == ["waiting", "done"]


def test_a_wait_times_out_and_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        waiters = TaskWaiters()
        other = asyncio.create_task(waiters.wait(["a"], timeout_s=60))
        await waiters.wait(["a", "b"], timeout_s=0.01)
        assert set(waiters._by_task) == {"a"}, "the other request still waits on a"
        waiters.on_events([finished("a")])
        await asyncio.wait_for(other, 10)
        assert not waiters._by_task

    asyncio.run(scenario())


def test_nothing_to_wait_for_returns_at_once() -> None:
    asyncio.run(asyncio.wait_for(TaskWaiters().wait([], timeout_s=60), 10))
