"""What the next attempt runs with once recovery has changed a task."""

from __future__ import annotations

from typing import Any

import pytest

from dtf.core.effective import effective_requirements, effective_spec
from dtf.core.model import HardwareClass
from dtf.core.records import TaskRecord, TaskStatus
from dtf.testing.factories import task_spec

BENCHMARK = {"type": "benchmark", "config": {"entry_point": "m:f", "params": {"batch_size": 32}}}
COMMAND = {"type": "command", "config": {"command": "true", "env": {"A": "1"}}}


def record(spec_fields: dict[str, Any], **fields: Any) -> TaskRecord:
    return TaskRecord("t", task_spec(**spec_fields), 1, 0.0, TaskStatus.PENDING, **fields)


def test_an_unchanged_task_runs_its_submitted_spec() -> None:
    task = record(BENCHMARK)
    assert effective_spec(task) is task.spec


@pytest.mark.parametrize(
    ("spec", "patch", "config"),
    [
        # a benchmark gets the patch in its params, other params kept
        (
            BENCHMARK,
            {"batch_size": 16, "precision": "fp16"},
            {"entry_point": "m:f", "params": {"batch_size": 16, "precision": "fp16"}},
        ),
        # a command gets it as DTF_ variables beside its own env
        (
            COMMAND,
            {"batch_size": 8},
            {"command": "true", "env": {"A": "1", "DTF_BATCH_SIZE": "8"}},
        ),
    ],
)
def test_params_patch(spec: dict[str, Any], patch: dict[str, Any], config: dict[str, Any]) -> None:
    task = record(spec, params_patch=patch)
    assert effective_spec(task).config == config
    assert task.spec.config == spec["config"]


def test_hardware_override_replaces_the_hardware_of_the_current_stage() -> None:
    spec = {**COMMAND, "requirements": {"hardware": ["cuda"], "min_memory_gb": 8}}
    task = record(spec, hardware_override=[HardwareClass.CPU])
    requirements = effective_requirements(task)
    assert requirements.hardware == [HardwareClass.CPU]
    assert requirements.min_memory_gb == 8
