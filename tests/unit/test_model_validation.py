"""The task format: what ``msgspec.convert(obj, TaskSpec)`` and ``validate_config`` refuse.

Every refusal must name the offending field so the API can hand it back to
the user as is.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from dtf.core.model import (
    BenchmarkConfig,
    CommandConfig,
    HardwareClass,
    Requirements,
    RequirementSet,
    TaskSpec,
    TaskType,
    TestConfig,
    validate_config,
)


def document(**fields: Any) -> dict[str, Any]:
    return {"type": "command", "config": {"command": "true"}, **fields}


INVALID_SPECS = [
    # an unknown top-level field is refused, not ignored
    (document(colour="blue"), "unknown field `colour`"),
    # an unknown task type names the type field
    (document(type="multi_device"), "`$.type`"),
    # the type is required
    ({"config": {}}, "missing required field `type`"),
    # a string where an int belongs
    (document(priority="high"), "Expected `int`, got `str` - at `$.priority`"),
    # priority is bounded
    (document(priority=1001), "`$.priority`"),
    # a negative timeout
    (document(timeout_seconds=-1), "`$.timeout_seconds`"),
    # a zero timeout: the timeout must be positive
    (document(timeout_seconds=0), "`$.timeout_seconds`"),
    # an unknown hardware class, with its position in the list
    (document(requirements={"hardware": ["quantum"]}), "`$.requirements.hardware[0]`"),
    # a negative memory minimum inside a fallback
    (
        document(requirements={"fallbacks": [{"min_memory_gb": -1}]}),
        "`$.requirements.fallbacks[0].min_memory_gb`",
    ),
    # an unknown field inside a nested browser requirement
    (
        document(requirements={"browser": {"name": "chrome", "channel": "beta"}}),
        "unknown field `channel` - at `$.requirements.browser`",
    ),
    # fallbacks must wait a positive time
    (
        document(requirements={"fallback_after_seconds": 0}),
        "`$.requirements.fallback_after_seconds`",
    ),
    # too many retries
    (document(retry_policy={"max_retries": 101}), "`$.retry_policy.max_retries`"),
    # backoff may not shrink the delay
    (document(retry_policy={"backoff_factor": 0.5}), "`$.retry_policy.backoff_factor`"),
    # jitter is a fraction
    (document(retry_policy={"jitter": 1.5}), "`$.retry_policy.jitter`"),
    # an unknown retry option
    (document(retry_policy={"retry_forever": True}), "unknown field `retry_forever`"),
    # a task id must start with a letter or digit
    (document(id="-leading-dash"), "`$.id`"),
    # dependency ids follow the task id pattern
    (document(dependencies=["has space"]), "`$.dependencies[0]`"),
    # labels are strings
    (document(labels={"owner": 7}), "`$.labels[...]`"),
    # config must be an object
    (document(config=["true"]), "`$.config`"),
]


@pytest.mark.parametrize(("obj", "message"), INVALID_SPECS)
def test_task_spec_refuses_with_field_named(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert(obj, TaskSpec)
    assert message in str(caught.value)


VALID_SPECS = [
    # the smallest task
    document(),
    # every requirement kind at once, with a fallback
    document(
        requirements={
            "hardware": ["cuda", "rocm"],
            "min_memory_gb": 16,
            "max_memory_gb": 512,
            "min_cpu_count": 4,
            "min_cuda_compute": 7.5,
            "max_cuda_compute": 9.0,
            "min_gpu_memory_gb": 24,
            "gpu_model": "A100",
            "browser": {"name": "chrome", "min_version": 120, "max_version": 130},
            "labels": {"pool": "gpu"},
            "worker_ids": ["w1"],
            "fallbacks": [{"hardware": ["cpu"]}],
            "fallback_after_seconds": 30,
        }
    ),
    # a test task and a benchmark task carry their own config
    {"type": "test", "config": {"path": "tests/test_x.py"}},
    {"type": "benchmark", "config": {"entry_point": "pkg.mod:bench", "params": {"n": 3}}},
]


@pytest.mark.parametrize("obj", VALID_SPECS)
def test_task_spec_accepts_and_round_trips(obj: dict[str, Any]) -> None:
    spec = msgspec.convert(obj, TaskSpec)
    assert msgspec.convert(msgspec.to_builtins(spec), TaskSpec) == spec


INVALID_CONFIGS = [
    # a command task needs its command
    (TaskType.COMMAND, {}, "missing required field `command` - at `$.config`"),
    # the command is a string or a list, never a number
    (TaskType.COMMAND, {"command": 5}, "`$.config.command`"),
    # an empty argv
    (TaskType.COMMAND, {"command": []}, "`$.config.command`"),
    # environment values are strings
    (TaskType.COMMAND, {"command": "x", "env": {"A": 1}}, "`$.config.env[...]`"),
    # an unknown field in a test config
    (TaskType.TEST, {"path": "t.py", "bogus": 1}, "unknown field `bogus` - at `$.config`"),
    # a test path may not be empty
    (TaskType.TEST, {"path": ""}, "`$.config.path`"),
    # a benchmark entry point is module:function
    (TaskType.BENCHMARK, {"entry_point": "no_colon"}, "`$.config.entry_point`"),
]


@pytest.mark.parametrize(("task_type", "config", "message"), INVALID_CONFIGS)
def test_validate_config_names_the_config_field(
    task_type: TaskType, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        validate_config(task_type, config)
    assert message in str(caught.value)


VALID_CONFIGS = [
    # a shell string
    (TaskType.COMMAND, {"command": "echo hi"}, CommandConfig),
    # an argv list with a working directory
    (TaskType.COMMAND, {"command": ["echo", "hi"], "cwd": "/tmp"}, CommandConfig),
    # a test file shipped inline
    (TaskType.TEST, {"path": "t.py", "source": "def test_x(): pass"}, TestConfig),
    # a benchmark with parameters
    (TaskType.BENCHMARK, {"entry_point": "a.b:c", "params": {"k": [1, 2]}}, BenchmarkConfig),
]


@pytest.mark.parametrize(("task_type", "config", "expected"), VALID_CONFIGS)
def test_validate_config_returns_the_typed_config(
    task_type: TaskType, config: dict[str, Any], expected: type
) -> None:
    assert isinstance(validate_config(task_type, config), expected)


def test_requirement_stages_are_primary_then_fallbacks() -> None:
    requirements = msgspec.convert(
        {"hardware": ["cuda"], "labels": {"a": "b"}, "fallbacks": [{"hardware": ["cpu"]}]},
        Requirements,
    )
    assert requirements.stage_count == 2
    assert requirements.stage(0) == RequirementSet(hardware=[HardwareClass.CUDA], labels={"a": "b"})
    assert requirements.stage(1) == RequirementSet(hardware=[HardwareClass.CPU])
