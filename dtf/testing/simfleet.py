"""The simulated fleet and the client's plan: who the workers are, what gets submitted
and cancelled when. Both are drawn from the simulation's seeded generator.

Tasks come in runs (the ``run_id`` label retry budgets count by);
each has a ``Behaviour`` (``simfaults``) in its share of the plan: plain
commands, buggy and flaky ones, OOM benchmarks that fit at a smaller batch
size or never, CUDA and browser tasks that fail now and then on that
hardware, hanging ones, and poison tasks."""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import msgspec

from dtf.core import commands as c
from dtf.core.budget import RUN_LABEL
from dtf.core.matching import satisfies
from dtf.core.model import Capabilities, HardwareClass, TaskSpec
from dtf.testing.simfaults import SIM_COMMAND, SIM_MODULE, Behaviour

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


BEHAVIOUR_SHARES: dict[Behaviour, float] = {
    Behaviour.SOFTWARE_BUG: 0.03,
    Behaviour.FLAKY: 0.06,
    Behaviour.OOM: 0.08,
    Behaviour.CUDA_FLAKY: 0.05,
    Behaviour.BROWSER_CRASH: 0.03,
    Behaviour.CONTEXT_LOST: 0.03,
    Behaviour.HANG: 0.05,
    Behaviour.POISON: 0.015,
}
BEHAVIOUR_HARDWARE = {
    Behaviour.CUDA_FLAKY: HardwareClass.CUDA,
    Behaviour.BROWSER_CRASH: HardwareClass.WEBGPU,
    Behaviour.CONTEXT_LOST: HardwareClass.WEBGPU,
}


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
    rng: random.Random,
    fleet: list[FleetMember],
    tasks: int,
    until_s: float,
    cancels: int,
    bad_workers: Collection[str] = (),
    run_sizes: tuple[int, int] = (12, 30),
) -> list[ClientAction]:
    """Batches of tasks at increasing times, grouped into runs (``run_id``),
    some sent twice, and cancellations. Every task can run on a good worker:
    one that only a bad worker could run would wait for quarantine to let it."""
    good = [m for m in fleet if m.worker_id not in bad_workers] or fleet
    menu = _satisfiable_requirements(good, rng)
    behaviours = plan_behaviours(rng, tasks, good)
    actions: list[ClientAction] = []
    made: list[str] = []
    sizes: list[int] = []
    while sum(sizes) < tasks:
        sizes.append(min(rng.randint(1, 9), tasks - sum(sizes)))
    times = sorted(rng.uniform(0.0, until_s) for _ in sizes)
    run, run_size, run_target = 0, 0, rng.randint(*run_sizes)
    for at, size in zip(times, sizes, strict=True):
        if run_size >= run_target:
            run, run_size, run_target = run + 1, 0, rng.randint(*run_sizes)
        batch = []
        for _ in range(size):
            behaviour = behaviours[len(made)]
            batch.append(_new_task(rng, len(made), made, menu, behaviour, f"run-{run}"))
            made.append(batch[-1].task_id)
        run_size += size
        actions.append(ClientAction(at, "submit", tuple(batch)))
        if rng.random() < 0.1:
            actions.append(ClientAction(at + rng.uniform(0.0, 30.0), "resubmit", tuple(batch)))
    for _ in range(cancels):
        actions.append(ClientAction(rng.uniform(0.0, until_s), "cancel", pick=rng.randrange(1000)))
    actions.sort(key=lambda action: action.at)
    return actions


def plan_behaviours(rng: random.Random, tasks: int, fleet: list[FleetMember]) -> list[Behaviour]:
    """Each special behaviour in its share of the tasks (at least one, when the
    fleet has the hardware it needs), the rest plain, in random order."""
    offered = {h for member in fleet for h in member.capabilities.hardware}
    behaviours = [
        behaviour
        for behaviour, share in BEHAVIOUR_SHARES.items()
        if BEHAVIOUR_HARDWARE.get(behaviour, HardwareClass.CPU) in offered
        for _ in range(max(1, round(tasks * share)))
    ][:tasks]
    behaviours += [Behaviour.PLAIN] * (tasks - len(behaviours))
    rng.shuffle(behaviours)
    return behaviours


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
    rng: random.Random,
    number: int,
    earlier: list[str],
    menu: list[dict[str, Any]],
    behaviour: Behaviour,
    run_id: str,
) -> c.NewTask:
    dependencies = []
    if earlier and rng.random() < 0.3:
        dependencies = sorted(set(rng.sample(earlier, min(len(earlier), rng.randint(1, 2)))))
    document: dict[str, Any] = {
        "type": "command",
        "config": {"command": [SIM_COMMAND, behaviour.value, str(number)]},
        "priority": rng.randint(-2, 8),
        "requirements": rng.choice(menu),
        "retry_policy": _retry_policy(rng),
        "dependencies": dependencies,
        "labels": {RUN_LABEL: run_id},
    }
    if behaviour in BEHAVIOUR_HARDWARE:
        document["requirements"] = {"hardware": [BEHAVIOUR_HARDWARE[behaviour].value]}
    if behaviour is Behaviour.POISON:
        document["requirements"] = {}
    if behaviour is Behaviour.OOM:
        document.update(_oom_benchmark(rng))
    if behaviour is Behaviour.HANG:
        document["timeout_seconds"] = rng.uniform(10.0, 25.0)
    if rng.random() < 0.3:
        document["idempotency_key"] = f"key-{number}"
    task_id = f"task-{number:04d}"
    return c.NewTask(task_id, msgspec.convert(document, TaskSpec))


def _retry_policy(rng: random.Random) -> dict[str, Any]:
    return {
        "max_retries": rng.randint(2, 5),
        "retry_delay_seconds": rng.choice([0.0, 0.5, 2.0]),
        "retry_on_nonzero_exit": rng.random() < 0.5,
    }


def _oom_benchmark(rng: random.Random) -> dict[str, Any]:
    """A benchmark out of memory above ``fits_up_to`` (0: at any batch size),
    allowed enough retries to halve its way down to a fit and a few more."""
    batch_size = rng.choice([16, 32, 64])
    fits_up_to = rng.choice([0, batch_size // 2, batch_size // 4, batch_size // 8, 3])
    params: dict[str, Any] = {"batch_size": batch_size, "fits_up_to": fits_up_to}
    if rng.random() < 0.5:
        params["precision"] = "fp32"
    halvings = halvings_to_fit(batch_size, fits_up_to) if fits_up_to else 0
    document: dict[str, Any] = {
        "type": "benchmark",
        "config": {"entry_point": f"{SIM_MODULE}:{Behaviour.OOM.value}", "params": params},
        "retry_policy": {**_retry_policy(rng), "max_retries": halvings + rng.randint(1, 3)},
    }
    if rng.random() < 0.5:
        document["requirements"] = {"hardware": [HardwareClass.CUDA.value]}
    return document


def halvings_to_fit(batch_size: int, fits_up_to: int) -> int:
    """How many halvings take ``batch_size`` to ``fits_up_to`` or below."""
    halvings = 0
    while batch_size > fits_up_to:
        batch_size, halvings = batch_size // 2, halvings + 1
    return halvings
