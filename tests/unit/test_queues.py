"""Ready queues: grouping by requirements and picking by (priority, submission order)."""

from __future__ import annotations

import msgspec
import pytest

from dtf.core.model import Capabilities, HardwareClass, RequirementSet
from dtf.core.queues import ReadyQueues
from dtf.testing.factories import capabilities

ANY = RequirementSet()
CUDA = RequirementSet(hardware=[HardwareClass.CUDA])
CPU_WORKER = Capabilities()
GPU_WORKER = capabilities(hardware=["cpu", "cuda"])


def always(_task_id: str) -> bool:
    return True


def queues(*entries: tuple[str, int, int, RequirementSet]) -> ReadyQueues:
    ready = ReadyQueues()
    for task_id, priority, seq, requirements in entries:
        ready.add(task_id, priority, seq, requirements)
    return ready


PICKS = [
    # lower priority number first
    ([("a", 5, 1, ANY), ("b", 1, 2, ANY)], CPU_WORKER, "b"),
    # equal priority: older (lower seq) first
    ([("a", 5, 2, ANY), ("b", 5, 1, ANY)], CPU_WORKER, "b"),
    # negative priorities beat the default
    ([("a", 5, 1, ANY), ("b", -3, 9, ANY)], CPU_WORKER, "b"),
    # across groups the best head wins
    ([("a", 5, 1, ANY), ("g", 1, 2, CUDA)], GPU_WORKER, "g"),
    # a group the worker cannot serve is passed over
    ([("a", 5, 1, ANY), ("g", 1, 2, CUDA)], CPU_WORKER, "a"),
    # nothing the worker can serve
    ([("g", 1, 1, CUDA)], CPU_WORKER, None),
    # nothing at all
    ([], CPU_WORKER, None),
]


@pytest.mark.parametrize(("entries", "worker", "expected"), PICKS)
def test_pick(
    entries: list[tuple[str, int, int, RequirementSet]], worker: Capabilities, expected: str | None
) -> None:
    assert queues(*entries).pick("w", worker, always) == expected


def test_pick_skips_unacceptable_tasks_and_takes_the_next() -> None:
    ready = queues(("a", 1, 1, ANY), ("b", 1, 2, ANY), ("c", 1, 3, ANY))
    assert ready.pick("w", CPU_WORKER, lambda task_id: task_id != "a") == "b"


def test_equal_requirements_built_differently_queue_together() -> None:
    built = msgspec.convert({"hardware": ["cuda"]}, RequirementSet)
    ready = queues(("a", 5, 1, CUDA), ("b", 1, 2, built))
    assert ready.pick("w", GPU_WORKER, always) == "b"
    ready.remove("b")
    assert ready.pick("w", GPU_WORKER, always) == "a"


def test_remove_and_membership() -> None:
    ready = queues(("a", 1, 1, ANY), ("g", 1, 2, CUDA))
    ready.remove("a")
    ready.remove("a")
    assert "a" not in ready
    assert "g" in ready
    assert len(ready) == 1
    assert ready.pick("w", CPU_WORKER, always) is None


def test_worker_id_requirements_are_matched_per_worker() -> None:
    ready = queues(("a", 1, 1, RequirementSet(worker_ids=["w2"])))
    assert ready.pick("w1", CPU_WORKER, always) is None
    assert ready.pick("w2", CPU_WORKER, always) == "a"


def test_forget_worker_drops_cached_matches_after_capabilities_change() -> None:
    ready = queues(("g", 1, 1, CUDA))
    assert ready.pick("w", CPU_WORKER, always) is None
    assert ready.pick("w", GPU_WORKER, always) is None  # cached "cannot serve"
    ready.forget_worker("w")
    assert ready.pick("w", GPU_WORKER, always) == "g"
