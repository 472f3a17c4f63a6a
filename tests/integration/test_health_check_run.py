"""Running a worker's health check command."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dtf.worker.health_check import run_health_check


def test_a_check_that_cannot_start_is_reported_as_failed(tmp_path: Path) -> None:
    missing = tmp_path / "removed-work-dir"
    report = asyncio.run(run_health_check("true", 5.0, missing))
    assert not report.passed
    assert "could not start 'true'" in report.detail
    assert str(missing) in report.detail
