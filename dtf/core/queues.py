"""Ready tasks, grouped by the requirement set they currently need.

Tasks with identical requirements share a group ordered by (priority, seq):
lower priority number first, then submission order. To fill a worker's slot
we look only at the heads of the groups that worker can serve, so picking
costs O(groups), not O(pending tasks), even with 100,000 tasks queued.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import msgspec
from sortedcontainers import SortedList

from dtf.core.matching import satisfies
from dtf.core.model import Capabilities, RequirementSet

QueueKey = tuple[int, int, str]
SCAN_LIMIT = 64

_requirement_encoder = msgspec.msgpack.Encoder(order="deterministic")


class _Group:
    __slots__ = ("entries", "requirements")

    def __init__(self, requirements: RequirementSet) -> None:
        self.requirements = requirements
        self.entries: SortedList = SortedList()


class ReadyQueues:
    def __init__(self) -> None:
        self._groups: dict[bytes, _Group] = {}
        self._where: dict[str, tuple[bytes, QueueKey]] = {}
        self._serves: dict[tuple[bytes, str], bool] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._where

    def add(self, task_id: str, priority: int, seq: int, requirements: RequirementSet) -> None:
        group_key = _requirement_encoder.encode(requirements)
        group = self._groups.get(group_key)
        if group is None:
            group = self._groups[group_key] = _Group(requirements)
        key = (priority, seq, task_id)
        group.entries.add(key)
        self._where[task_id] = (group_key, key)

    def remove(self, task_id: str) -> None:
        found = self._where.pop(task_id, None)
        if found is None:
            return
        group_key, key = found
        group = self._groups[group_key]
        group.entries.remove(key)
        if not group.entries:
            del self._groups[group_key]

    def forget_worker(self, worker_id: str) -> None:
        """Drop cached match results for a worker whose capabilities changed."""
        self._serves = {k: v for k, v in self._serves.items() if k[1] != worker_id}

    def pick(
        self,
        worker_id: str,
        capabilities: Capabilities,
        is_acceptable: Callable[[str], bool],
    ) -> str | None:
        """The best ready task this worker can run, or None."""
        best: QueueKey | None = None
        for group_key, group in self._groups.items():
            if not self._can_serve(group_key, group, worker_id, capabilities):
                continue
            for key in _head(group.entries):
                if best is not None and key >= best:
                    break
                if is_acceptable(key[2]):
                    best = key
                    break
        return best[2] if best else None

    def _can_serve(
        self, group_key: bytes, group: _Group, worker_id: str, capabilities: Capabilities
    ) -> bool:
        cache_key = (group_key, worker_id)
        cached = self._serves.get(cache_key)
        if cached is None:
            cached = self._serves[cache_key] = satisfies(
                group.requirements, capabilities, worker_id
            )
        return cached


def _head(entries: SortedList) -> Iterator[QueueKey]:
    for index, key in enumerate(entries):
        if index >= SCAN_LIMIT:
            return
        yield key
