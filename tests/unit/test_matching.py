"""Matching a requirement set against a worker, and explaining why a task waits."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from dtf.core.matching import count_satisfying, explain_waiting, satisfies
from dtf.core.model import Capabilities, RequirementSet
from dtf.testing.factories import capabilities

CUDA_8 = {
    "vendor": "nvidia",
    "model": "NVIDIA A100-SXM4-80GB",
    "memory_gb": 80,
    "compute_capability": 8.0,
}
CUDA_7 = {"vendor": "nvidia", "model": "Tesla V100", "memory_gb": 16, "compute_capability": 7.0}


def requirement(**fields: Any) -> RequirementSet:
    return msgspec.convert(fields, RequirementSet)


MATCHES = [
    # no requirements: any worker
    ({}, {}, "w1", True),
    # hardware is any-of: cuda or rocm, worker has rocm
    ({"hardware": ["cuda", "rocm"]}, {"hardware": ["cpu", "rocm"]}, "w1", True),
    # hardware any-of with none present
    ({"hardware": ["cuda", "rocm"]}, {"hardware": ["cpu"]}, "w1", False),
    # declared hardware is sent in both lists by the agent and matches like detected
    ({"hardware": ["tpu"]}, {"hardware": ["cpu", "tpu"], "declared_hardware": ["tpu"]}, "w1", True),
    # memory minimum met exactly
    ({"min_memory_gb": 32}, {"memory_gb": 32}, "w1", True),
    # memory minimum missed
    ({"min_memory_gb": 32}, {"memory_gb": 31.9}, "w1", False),
    # memory range: too much memory for a small-machine test
    ({"min_memory_gb": 4, "max_memory_gb": 16}, {"memory_gb": 64}, "w1", False),
    # memory range: inside
    ({"min_memory_gb": 4, "max_memory_gb": 16}, {"memory_gb": 8}, "w1", True),
    # cpu count minimum
    ({"min_cpu_count": 8}, {"cpu_count": 4}, "w1", False),
    # cuda compute minimum uses the best GPU
    ({"min_cuda_compute": 8.0}, {"gpus": [CUDA_7, CUDA_8]}, "w1", True),
    # cuda compute minimum without any GPU
    ({"min_cuda_compute": 7.0}, {}, "w1", False),
    # cuda compute range: best GPU above the maximum
    ({"min_cuda_compute": 7.0, "max_cuda_compute": 7.5}, {"gpus": [CUDA_8]}, "w1", False),
    # cuda compute range: inside
    ({"min_cuda_compute": 7.0, "max_cuda_compute": 7.5}, {"gpus": [CUDA_7]}, "w1", True),
    # gpu memory minimum met by one of the GPUs
    ({"min_gpu_memory_gb": 40}, {"gpus": [CUDA_7, CUDA_8]}, "w1", True),
    # gpu memory minimum missed
    ({"min_gpu_memory_gb": 40}, {"gpus": [CUDA_7]}, "w1", False),
    # gpu model is a case-insensitive substring
    ({"gpu_model": "a100"}, {"gpus": [CUDA_8]}, "w1", True),
    # gpu model absent
    ({"gpu_model": "H100"}, {"gpus": [CUDA_8]}, "w1", False),
    # browser by name, any version, case-insensitive
    ({"browser": {"name": "Chrome"}}, {"browsers": [{"name": "chrome"}]}, "w1", True),
    # browser missing
    (
        {"browser": {"name": "firefox"}},
        {"browsers": [{"name": "chrome", "major": 120}]},
        "w1",
        False,
    ),
    # browser version inside the range
    (
        {"browser": {"name": "chrome", "min_version": 110, "max_version": 125}},
        {"browsers": [{"name": "chrome", "major": 120}]},
        "w1",
        True,
    ),
    # browser version below the minimum
    (
        {"browser": {"name": "chrome", "min_version": 121}},
        {"browsers": [{"name": "chrome", "major": 120}]},
        "w1",
        False,
    ),
    # browser version above the maximum
    (
        {"browser": {"name": "chrome", "max_version": 119}},
        {"browsers": [{"name": "chrome", "major": 120}]},
        "w1",
        False,
    ),
    # a version range cannot be met by a browser of unknown major version
    (
        {"browser": {"name": "chrome", "min_version": 1}},
        {"browsers": [{"name": "chrome"}]},
        "w1",
        False,
    ),
    # a second install of the same browser can satisfy the range
    (
        {"browser": {"name": "chrome", "min_version": 125}},
        {"browsers": [{"name": "chrome", "major": 120}, {"name": "chrome", "major": 126}]},
        "w1",
        True,
    ),
    # labels match exactly
    ({"labels": {"pool": "gpu"}}, {"labels": {"pool": "gpu", "rack": "3"}}, "w1", True),
    # a label with another value
    ({"labels": {"pool": "gpu"}}, {"labels": {"pool": "cpu"}}, "w1", False),
    # a label the worker lacks
    ({"labels": {"pool": "gpu"}}, {}, "w1", False),
    # worker ids: listed
    ({"worker_ids": ["w1", "w2"]}, {}, "w2", True),
    # worker ids: not listed
    ({"worker_ids": ["w1", "w2"]}, {}, "w3", False),
    # all constraints must hold: hardware yes, memory no
    (
        {"hardware": ["cuda"], "min_memory_gb": 64},
        {"hardware": ["cuda"], "memory_gb": 32},
        "w1",
        False,
    ),
]


@pytest.mark.parametrize(("req", "caps", "worker_id", "expected"), MATCHES)
def test_satisfies(
    req: dict[str, Any], caps: dict[str, Any], worker_id: str, expected: bool
) -> None:
    assert satisfies(requirement(**req), capabilities(**caps), worker_id) is expected


FLEET: list[tuple[str, Capabilities]] = [
    ("cpu-small", capabilities(memory_gb=8)),
    ("cpu-big", capabilities(memory_gb=64)),
    ("gpu", capabilities(hardware=["cpu", "cuda"], memory_gb=16, gpus=[CUDA_8])),
]

EXPLANATIONS = [
    # the example from the docs: no cuda worker with enough memory
    (
        {"hardware": ["cuda"], "min_memory_gb": 32},
        FLEET,
        "cuda: 1 of 3 workers; memory_gb >= 32: 1 of 3",
    ),
    # nothing offers the hardware at all
    (
        {"hardware": ["tpu"], "min_memory_gb": 32},
        FLEET,
        "tpu: 0 of 3 workers; memory_gb >= 32: 1 of 3",
    ),
    # any-of hardware is shown joined by a slash
    ({"hardware": ["tpu", "npu"]}, FLEET, "tpu/npu: 0 of 3 workers"),
    # a memory range met by one worker, which is busy
    (
        {"min_memory_gb": 10, "max_memory_gb": 20},
        FLEET,
        "10 <= memory_gb <= 20: 1 of 3 workers; 1 matching worker, all slots busy",
    ),
    # a browser version range and a label
    (
        {"browser": {"name": "chrome", "min_version": 120}, "labels": {"pool": "x"}},
        FLEET,
        "chrome version >= 120: 0 of 3 workers; label pool=x: 0 of 3",
    ),
    # worker ids, none of them registered
    ({"worker_ids": ["gone", "nope"]}, FLEET, "worker in ['gone', 'nope']: 0 of 3 workers"),
    # satisfiable: the slots are busy
    ({"hardware": ["cuda"]}, FLEET, "cuda: 1 of 3 workers; 1 matching worker, all slots busy"),
    # no requirements at all
    ({}, FLEET, "no requirements; 3 workers can run it, all slots busy"),
    # nobody online
    ({"hardware": ["cuda"]}, [], "no workers are online"),
]


@pytest.mark.parametrize(("req", "workers", "expected"), EXPLANATIONS)
def test_explain_waiting(
    req: dict[str, Any], workers: list[tuple[str, Capabilities]], expected: str
) -> None:
    assert explain_waiting(requirement(**req), workers) == expected


def test_count_satisfying_counts_each_constraint_alone() -> None:
    counts = count_satisfying(requirement(hardware=["cuda"], min_memory_gb=32), FLEET)
    assert [(c.constraint, c.satisfied_by, c.of) for c in counts] == [
        ("cuda", 1, 3),
        ("memory_gb >= 32", 1, 3),
    ]
