"""The reaper sidecar's bookkeeping of process groups."""

from __future__ import annotations

import pytest

from dtf.worker.reaper import watch


@pytest.mark.parametrize(
    ("lines", "left"),
    [
        ([], set()),  # nothing ever started
        ([b"+10\n", b"+11\n", b"-10\n"], {11}),  # one ended, one still running
        ([b"+10\n", b"-10\n", b"+10\n"], {10}),  # a pgid reused after it ended
        ([b"-12\n"], set()),  # an end without a start is harmless
        ([b"+10\n", b"garbage\n", b"+\n", b"*13\n", b"+-4\n"], {10}),  # junk is ignored
        ([b"+10"], {10}),  # last line cut short by the agent dying
    ],
)
def test_watch_lists_groups_still_running(lines: list[bytes], left: set[int]) -> None:
    assert watch(lines) == left
