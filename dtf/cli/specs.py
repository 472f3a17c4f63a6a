"""Building task specs from ``dtf submit`` flags: pure functions of their arguments."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtf.errors import InvalidRequest

Spec = dict[str, Any]


@dataclass(frozen=True)
class SpecOptions:
    """Flags that apply to every submitted spec; None means "leave the spec's own value"."""

    task_id: str | None = None
    name: str | None = None
    priority: int | None = None
    requirements: dict[str, Any] | None = None
    timeout_s: float | None = None
    max_retries: int | None = None
    retry_on_nonzero_exit: bool = False
    dependencies: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


def spec_for_command(command: str) -> Spec:
    return {"type": "command", "config": {"command": command}}


def spec_for_test_file(path: Path, args: str | None) -> Spec:
    """A test task that ships the file's source, so a worker on another machine can run it."""
    resolved = path.resolve()
    try:
        source = resolved.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            f"cannot read test file {str(path)!r}: {exc}", field="test-file"
        ) from None
    config = {"path": str(resolved), "args": shlex.split(args or ""), "source": source}
    return {"type": "test", "config": config}


def spec_for_benchmark(target: str, params: dict[str, str]) -> Spec:
    """``module:function`` or ``path/to/file.py:function`` with ``k=v`` params (JSON values)."""
    module, sep, function = target.rpartition(":")
    if not sep or not module or not function:
        raise InvalidRequest(
            f"benchmark {target!r} must be module:function or file.py:function", field="benchmark"
        )
    config: Spec = {"params": {k: parse_value(v) for k, v in params.items()}}
    if module.endswith(".py"):
        path = Path(module).resolve()
        config["python_path"] = [str(path.parent)]
        module = path.stem
    config["entry_point"] = f"{module}:{function}"
    return {"type": "benchmark", "config": config}


def parse_value(text: str) -> Any:
    """``"8"`` -> 8, ``"true"`` -> True, ``"[1,2]"`` -> [1, 2]; anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(
            f"{option} is not valid JSON ({exc}): {text!r}", field=option
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{option} must be a JSON object, got {text!r}", field=option)
    return value


def specs_from_file(path: Path) -> list[Spec]:
    """One spec, a list of specs, or ``{"tasks": [...]}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(
            f"cannot read task file {str(path)!r}: {exc}", field="task-file"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("tasks"), list):
        data = data["tasks"]
    specs = data if isinstance(data, list) else [data]
    if not specs or not all(isinstance(spec, dict) for spec in specs):
        raise InvalidRequest(
            f"task file {str(path)!r} must hold a task object, a list of them or "
            '{"tasks": [...]}',
            field="task-file",
        )
    return specs


def apply_options(specs: list[Spec], options: SpecOptions) -> list[Spec]:
    if options.task_id is not None and len(specs) != 1:
        raise InvalidRequest(
            f"--id {options.task_id!r} names one task but {len(specs)} are being submitted; "
            "put ids in the task file instead",
            field="id",
        )
    return [_apply(dict(spec), options) for spec in specs]


def _apply(spec: Spec, options: SpecOptions) -> Spec:
    simple = {
        "id": options.task_id,
        "name": options.name,
        "priority": options.priority,
        "requirements": options.requirements,
        "timeout_seconds": options.timeout_s,
    }
    spec.update({key: value for key, value in simple.items() if value is not None})
    if options.max_retries is not None or options.retry_on_nonzero_exit:
        policy = dict(spec.get("retry_policy", {}))
        if options.max_retries is not None:
            policy["max_retries"] = options.max_retries
        if options.retry_on_nonzero_exit:
            policy["retry_on_nonzero_exit"] = True
        spec["retry_policy"] = policy
    if options.dependencies:
        spec["dependencies"] = [*spec.get("dependencies", []), *options.dependencies]
    if options.labels:
        spec["labels"] = {**spec.get("labels", {}), **options.labels}
    return spec
