"""Which processes the reaper sidecar recognises as its agent's."""

from __future__ import annotations

import pytest

from dtf.proc_markers import carries_marker
from dtf.worker.reaper import MARKER_ENV


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (b"PATH=/bin\0DTF_AGENT_MARKER=abc\0HOME=/\0", True),  # marker among others
        (b"DTF_AGENT_MARKER=abc", True),  # marker alone, no trailing NUL
        (b"PATH=/bin\0DTF_AGENT_MARKER=abcd\0", False),  # another agent's longer marker
        (b"PATH=/bin\0X_DTF_AGENT_MARKER=abc\0", False),  # a different variable
        (b"PATH=/bin\0DTF_LOCAL_MARKER=abc\0", False),  # a local cluster's child marker
        (b"", False),  # a kernel thread's empty environment
    ],
)
def test_carries_marker(environ: bytes, expected: bool) -> None:
    assert carries_marker(environ, MARKER_ENV, "abc") is expected
