"""What a task asks for right now: its spec with recovery's changes applied.

Recovery may change a task between attempts: a smaller batch size or lower
precision (``params_patch``) or another hardware class (``hardware_override``).
The submitted spec is never modified; these functions derive what the next
attempt runs with and what a worker must offer to take it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dtf.core.model import RequirementSet, TaskSpec, TaskType
from dtf.core.records import TaskRecord


def effective_requirements(task: TaskRecord) -> RequirementSet:
    """The current requirement stage, with the hardware recovery switched to."""
    stage = task.spec.requirements.stage(task.requirement_stage)
    if task.hardware_override is None:
        return stage
    return msgspec.structs.replace(stage, hardware=list(task.hardware_override))


def effective_spec(task: TaskRecord) -> TaskSpec:
    """The spec the next attempt runs: a benchmark gets the patch in its
    ``params``; a command or test gets it as ``DTF_<NAME>`` variables."""
    if not task.params_patch:
        return task.spec
    config: dict[str, Any] = dict(task.spec.config)
    if task.spec.type is TaskType.BENCHMARK:
        config["params"] = {**config.get("params", {}), **task.params_patch}
    else:
        patch_env = {f"DTF_{k.upper()}": str(v) for k, v in task.params_patch.items()}
        config["env"] = {**config.get("env", {}), **patch_env}
    return msgspec.structs.replace(task.spec, config=config)
