"""Which processes the orphan guard's sidecar recognises as its supervisor's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dtf.local.orphan_guard import MARKER_ENV
from dtf.proc_markers import carries_marker, marked_pids


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (b"PATH=/bin\0DTF_LOCAL_MARKER=abc\0HOME=/\0", True),  # marker among others
        (b"DTF_LOCAL_MARKER=abc", True),  # marker alone, no trailing NUL
        (b"PATH=/bin\0DTF_LOCAL_MARKER=abcd\0", False),  # another cluster's longer marker
        (b"PATH=/bin\0DTF_AGENT_MARKER=abc\0", False),  # a worker's task marker
        (b"", False),  # a kernel thread's or a zombie's empty environment
    ],
)
def test_carries_marker(environ: bytes, expected: bool) -> None:
    assert carries_marker(environ, MARKER_ENV, "abc") is expected


def test_marked_pids_reads_each_process_environment_and_skips_the_excluded(
    tmp_path: Path,
) -> None:
    environments = {
        "10": b"DTF_LOCAL_MARKER=abc\0",  # a child
        "11": b"DTF_LOCAL_MARKER=abc\0",  # the guard itself, excluded
        "12": b"DTF_LOCAL_MARKER=xyz\0",  # another cluster's child
    }
    for pid, environ in environments.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "environ").write_bytes(environ)
    (tmp_path / "13").mkdir()  # a process that exited while being read: no environ
    (tmp_path / "self").mkdir()  # not a process directory
    assert marked_pids(MARKER_ENV, "abc", exclude={11}, proc=tmp_path) == [10]


def test_the_sidecar_module_imports_the_standard_library_only() -> None:
    """What ``python -c SIDECAR_CODE`` loads must not fail on anything else dtf needs."""
    source = Path(__file__).parents[2] / "dtf" / "proc_markers.py"
    imported = {
        line.split()[1].split(".")[0]
        for line in source.read_text(encoding="utf-8").splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imported - sys.stdlib_module_names == set()
