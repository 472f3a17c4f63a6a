"""Child process of a benchmark task: ``python -m dtf.worker.benchmark_runner SPEC``.

SPEC is a JSON file ``{"entry_point": "module:function", "params": {...},
"python_path": [...]}``. The function is called with ``params`` as keyword
arguments and must return a dict of JSON values, which is written to
``$DTF_RESULT_FILE``. Exit codes tell the executor what went wrong: an
exception inside the function exits 1 with its traceback on stderr, as any
Python program would; the codes below are the runner's own.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

ENTRY_POINT_ERROR = 81
RESULT_ERROR = 82


class RunnerError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load(entry_point: str, python_path: list[str]) -> Callable[..., Any]:
    sys.path[:0] = [*python_path, os.getcwd()]
    module_name, _, function_name = entry_point.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise RunnerError(
            f"cannot load benchmark entry point {entry_point!r}: {type(exc).__name__}: {exc}",
            ENTRY_POINT_ERROR,
        ) from exc
    if not callable(function):
        raise RunnerError(
            f"benchmark entry point {entry_point!r} is not callable", ENTRY_POINT_ERROR
        )
    return function  # type: ignore[no-any-return]


def encode_metrics(entry_point: str, result: object) -> str:
    if not isinstance(result, dict) or not all(isinstance(key, str) for key in result):
        raise RunnerError(
            f"benchmark {entry_point!r} returned {type(result).__name__}; "
            "it must return a dict with string keys",
            RESULT_ERROR,
        )
    try:
        return json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RunnerError(
            f"benchmark {entry_point!r} returned values that are not JSON: {exc}", RESULT_ERROR
        ) from exc


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as spec_file:
        spec = json.load(spec_file)
    entry_point = spec["entry_point"]
    try:
        function = load(entry_point, spec.get("python_path", []))
        result = function(**spec.get("params", {}))
        encoded = encode_metrics(entry_point, result)
    except RunnerError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    with open(os.environ["DTF_RESULT_FILE"], "w", encoding="utf-8") as result_file:
        result_file.write(encoded)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
