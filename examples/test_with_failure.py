"""A pytest file with one deliberately failing test, to show a ``test`` task
that completes (the run itself worked) while reporting a failing test case.

Submit it as a ``test`` task: ``{"type": "test", "config": {"path": "examples/test_with_failure.py"}}``.
"""

from __future__ import annotations


def test_addition() -> None:
    assert 2 + 2 == 4


def test_deliberately_fails() -> None:
    expected_items = 3
    assert len(["a", "b"]) == expected_items, "this test fails on purpose"
