"""``dtf demo`` runs its whole workload on real processes and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DEMO_TIMEOUT_S = 150


@pytest.mark.timeout(DEMO_TIMEOUT_S + 60)
def test_demo_runs_to_completion(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    env["COLUMNS"] = "160"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dtf.cli",
            "demo",
            "--data-dir",
            str(tmp_path),
            "--timeout",
            str(DEMO_TIMEOUT_S),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=DEMO_TIMEOUT_S + 45,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "demo passed" in output
    assert "killed worker local-" in output
    assert "recovered, attempt 2" in output
    assert "FAIL" not in output
    for expected in ("matmul benchmark", "test_deliberately_fails", "which worker ran what"):
        assert expected in output
    assert (tmp_path / "logs" / "coordinator.log").is_file()
    assert str(tmp_path) in output
