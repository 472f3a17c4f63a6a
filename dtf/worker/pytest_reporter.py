"""pytest plugin that writes one JSON line per test to ``$DTF_PYTEST_REPORT``.

Loaded into a test task's pytest with ``-p dtf.worker.pytest_reporter``.
Each line is ``{"node_id", "outcome", "duration_s", "message"}`` with outcome
one of passed, failed, skipped, error, xfailed, xpassed. A test's line is
written after its teardown and flushed at once, so a run killed by its
timeout still reports the tests it finished.
"""

from __future__ import annotations

import json
import os
from typing import IO, Any

import pytest

REPORT_ENV = "DTF_PYTEST_REPORT"
MESSAGE_CHARS = 500


def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        config.pluginmanager.register(JsonLinesReporter(open(path, "a", encoding="utf-8")))  # noqa: SIM115


class JsonLinesReporter:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.pending: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = self.pending.setdefault(
            report.nodeid, {"node_id": report.nodeid, "outcome": "passed", "duration_s": 0.0}
        )
        record["duration_s"] += report.duration
        outcome = phase_outcome(report)
        if outcome is not None and (record["outcome"] == "passed" or outcome == "error"):
            record["outcome"] = outcome
            record["message"] = failure_message(report)
        if report.when == "teardown":
            self.write(self.pending.pop(report.nodeid))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.write(
                {"node_id": report.nodeid, "outcome": "error", "message": failure_message(report)}
            )

    def pytest_unconfigure(self) -> None:
        self.out.close()

    def write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()


def phase_outcome(report: pytest.TestReport) -> str | None:
    """What one phase (setup, call, teardown) says about the test; None if it passed."""
    is_xfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if report.passed:
            return "xpassed" if is_xfail else None
        if report.skipped:
            return "xfailed" if is_xfail else "skipped"
        return "failed"
    if report.skipped:
        return "xfailed" if is_xfail else "skipped"
    return "error" if report.failed else None


def failure_message(report: pytest.TestReport | pytest.CollectReport) -> str | None:
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail) or None
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (path, line number, reason)
        message = str(longrepr[2])
    else:
        crash = getattr(longrepr, "reprcrash", None)
        message = getattr(crash, "message", None) or _last_line(report.longreprtext)
    return message[:MESSAGE_CHARS] or None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
