"""The simulated fleet and the client's plan: who the workers are, what gets submitted
and cancelled when. Both are drawn from the simulation's seeded generator."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import msgspec

from dtf.core import commands as c
from dtf.core.matching import satisfies
from dtf.core.model import Capabilities, TaskSpec

WORKER_KINDS: list[tuple[dict[str, Any], int]] = [
    ({"memory_gb": 8, "cpu_count": 4, "labels": {"pool": "a"}}, 2),
    ({"memory_gb": 64, "cpu_count": 32, "labels": {"pool": "b"}}, 4),
    (
        {
            "hardware": ["cpu", "cuda"],
            "memory_gb": 32,
            "gpus": [
                {
                    "vendor": "nvidia",
                    "model": "Tesla V100",
                    "memory_gb": 16,
                    "compute_capability": 7.0,
                }
            ],
        },
        1,
    ),
    (
        {
            "hardware": ["cpu", "cuda"],
            "memory_gb": 128,
            "gpus": [
                {"vendor": "nvidia", "model": "A100", "memory_gb": 80, "compute_capability": 8.0}
            ],
        },
        2,
    ),
    (
        {
            "hardware": ["cpu", "webgpu"],
            "memory_gb": 16,
            "browsers": [{"name": "chrome", "version": "126.0", "major": 126}],
        },
        1,
    ),
]

REQUIREMENT_MENU: list[dict[str, Any]] = [
    {},
    {},
    {},
    {"hardware": ["cuda"]},
    {"min_cuda_compute": 8.0},
    {"min_memory_gb": 32},
    {"labels": {"pool": "a"}},
    {"browser": {"name": "chrome", "min_version": 121}},
    {"hardware": ["tpu"], "fallbacks": [{"hardware": ["cuda"]}, {}], "fallback_after_seconds": 15},
    {"hardware": ["webgpu"], "fallbacks": [{}], "fallback_after_seconds": 20},
]


@dataclass(frozen=True)
class FleetMember:
    worker_id: str
    capabilities: Capabilities
    slots: int


@dataclass(frozen=True)
class ClientAction:
    """``submit`` a batch (again, for a ``resubmit``) or ``cancel`` the n-th unfinished task."""

    at: float
    kind: str
    batch: tuple[c.NewTask, ...] = ()
    pick: int = 0


def build_fleet(count: int) -> list[FleetMember]:
    members = []
    for n in range(count):
        fields, slots = WORKER_KINDS[n % len(WORKER_KINDS)]
        capabilities = msgspec.convert(fields, Capabilities)
        members.append(FleetMember(f"w{n:02d}", capabilities, slots))
    return members


def plan_client(
    rng: random.Random, fleet: list[FleetMember], tasks: int, until_s: float, cancels: int
) -> list[ClientAction]:
    """Batches of tasks at increasing times, some sent twice, and cancellations."""
    menu = _satisfiable_requirements(fleet, rng)
    actions: list[ClientAction] = []
    made: list[str] = []
    sizes: list[int] = []
    while sum(sizes) < tasks:
        sizes.append(min(rng.randint(1, 9), tasks - sum(sizes)))
    times = sorted(rng.uniform(0.0, until_s) for _ in sizes)
    for at, size in zip(times, sizes, strict=True):
        batch = []
        for _ in range(size):
            batch.append(_new_task(rng, len(made), made, menu))
            made.append(batch[-1].task_id)
        actions.append(ClientAction(at, "submit", tuple(batch)))
        if rng.random() < 0.1:
            actions.append(ClientAction(at + rng.uniform(0.0, 30.0), "resubmit", tuple(batch)))
    for _ in range(cancels):
        actions.append(ClientAction(rng.uniform(0.0, until_s), "cancel", pick=rng.randrange(1000)))
    actions.sort(key=lambda action: action.at)
    return actions


def _satisfiable_requirements(fleet: list[FleetMember], rng: random.Random) -> list[dict[str, Any]]:
    pinned = {"worker_ids": [rng.choice(fleet).worker_id]}
    menu = []
    for requirements in [*REQUIREMENT_MENU, pinned]:
        spec = msgspec.convert(
            {"type": "command", "config": {}, "requirements": requirements}, TaskSpec
        )
        stages = [spec.requirements.stage(i) for i in range(spec.requirements.stage_count)]
        if any(satisfies(s, m.capabilities, m.worker_id) for s in stages for m in fleet):
            menu.append(requirements)
    return menu


def _new_task(
    rng: random.Random, number: int, earlier: list[str], menu: list[dict[str, Any]]
) -> c.NewTask:
    requirements = rng.choice(menu)
    retry: dict[str, Any] = {
        "max_retries": rng.randint(2, 5),
        "retry_delay_seconds": rng.choice([0.0, 0.5, 2.0]),
        "retry_on_nonzero_exit": rng.random() < 0.5,
    }
    dependencies = []
    if earlier and rng.random() < 0.3:
        dependencies = sorted(set(rng.sample(earlier, min(len(earlier), rng.randint(1, 2)))))
    document: dict[str, Any] = {
        "type": "command",
        "config": {"command": f"run-case {number}"},
        "priority": rng.randint(-2, 8),
        "requirements": requirements,
        "retry_policy": retry,
        "dependencies": dependencies,
    }
    if rng.random() < 0.3:
        document["idempotency_key"] = f"key-{number}"
    task_id = f"task-{number:04d}"
    return c.NewTask(task_id, msgspec.convert(document, TaskSpec))
