"""A small, healthy pytest file for dtf ``test`` tasks: every test passes,
skips or fails as expected (xfail), so the task completes with no failures.

Submit it as a ``test`` task: ``{"type": "test", "config": {"path": "examples/test_sample.py"}}``.
"""

from __future__ import annotations

import json
import math
import sys

import pytest


def test_json_round_trip() -> None:
    record = {"name": "matmul", "sizes": [32, 64], "ok": True}
    assert json.loads(json.dumps(record)) == record


def test_float_sum_is_exact_with_fsum() -> None:
    assert math.fsum([0.1] * 10) == 1.0


@pytest.mark.parametrize(("value", "expected"), [(1, 1), (4, 2), (81, 9), (2**20, 2**10)])
def test_integer_square_root(value: int, expected: int) -> None:
    assert math.isqrt(value) == expected


@pytest.mark.skipif(sys.platform != "win32", reason="only meaningful on Windows")
def test_windows_paths() -> None:
    assert "\\" in "C:\\Users"


@pytest.mark.xfail(reason="binary floating point cannot represent 0.1 exactly", strict=True)
def test_naive_float_sum() -> None:
    assert sum([0.1] * 10) == 1.0
