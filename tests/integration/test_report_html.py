"""A real run's report renders: local workers run matmul benchmarks and two pytest files,
``dtf report`` writes the HTML through the API, and headless Chromium draws its charts.

The page is opened from the file (no server), so the test also shows the
report works offline: plotly.js is inlined. A screenshot is saved under the
test's tmp_path for a human to look at.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from junitparser import JUnitXml

from dtf.client import Client
from dtf.local.cluster import ClusterSettings, LocalCluster
from dtf.testing.waiting import wait_for

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHROMIUM = Path("/usr/bin/chromium")
RUN = "report-run-1"
LABELS = {"run_id": RUN, "commit": "f00dcafe"}
CHARTS = ("latency", "throughput", "distributions", "tests")
# Times one numpy sort of 2**16 numbers, seven times: a metric with repeats, so the
# report has a distribution to draw.
SORT_TIMING = """
import json, os, time
import numpy as np
values = np.random.default_rng(0).random(2**16)
timings = []
for _ in range(7):
    started = time.perf_counter()
    np.sort(values)
    timings.append((time.perf_counter() - started) * 1e3)
with open(os.environ["DTF_RESULT_FILE"], "w") as result:
    json.dump({"sort_latency_ms": timings}, result)
"""
PAGE_TIMEOUT_MS = 30_000


def benchmark(size: int, batch_size: int) -> dict[str, Any]:
    return {
        "id": f"matmul{size}-bs{batch_size}",
        "type": "benchmark",
        "config": {
            "entry_point": "matmul_bench:run",
            "python_path": [str(EXAMPLES)],
            "params": {"batch_size": batch_size, "size": size, "repeats": 3},
        },
        "labels": {**LABELS, "model": f"matmul{size}"},
    }


def pytest_file(name: str) -> dict[str, Any]:
    return {
        "id": name.removesuffix(".py"),
        "type": "test",
        "config": {"path": str(EXAMPLES / name)},
        "labels": LABELS,
    }


SORT_TASK = {
    "id": "numpy-sort",
    "type": "command",
    "config": {"command": [sys.executable, "-c", SORT_TIMING]},
    "labels": {**LABELS, "model": "numpy-sort", "batch_size": "65536"},
}


def reported_tasks(client: Client) -> int:
    summary = json.loads(client.report(RUN, "json"))["summary"]
    return sum(summary["tasks_by_status"].values())


def dtf_report(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dtf.cli", "report", RUN, *args]
    command += ["--coordinator", cluster.url, "--api-key", cluster.admin_key]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_the_html_report_of_a_real_run_renders_in_chromium(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` to run this test")
    from playwright.sync_api import sync_playwright

    specs = [benchmark(size, batch) for size in (16, 32) for batch in (1, 4)]
    specs += [pytest_file("test_sample.py"), pytest_file("test_with_failure.py"), SORT_TASK]
    html_path = tmp_path / "report.html"
    junit_path = tmp_path / "junit.xml"
    with LocalCluster(ClusterSettings(tmp_path / "data", workers=2)) as cluster:
        with cluster.client() as client:
            tasks = client.wait(client.submit_many(specs), timeout_s=90)
            assert {t["status"] for t in tasks} == {"completed"}
            wait_for(lambda: reported_tasks(client) == len(specs), 30, "all tasks in the report")
        written = dtf_report(cluster, "--format", "html", "--output", str(html_path))
        assert written.returncode == 0, written.stderr
        junit = dtf_report(cluster, "--format", "junit", "--output", str(junit_path))
        assert junit.returncode == 0, junit.stderr

    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(junit_path))}
    assert (suites["benchmark"].tests, suites["benchmark"].failures) == (4, 0)
    failing = suites[str(EXAMPLES / "test_with_failure.py")]
    assert (failing.tests, failing.failures) == (2, 1)

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(html_path.as_uri())
            for chart in CHARTS:
                page.wait_for_selector(f"#chart-{chart} svg.main-svg", timeout=PAGE_TIMEOUT_MS)
            plotted = page.locator("#chart-latency .scatterlayer .trace").count()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    # Three latency metrics (median, p90, min), a line per model on cpu in each, and the
    # sort's latency.
    assert plotted == 3 * 2 + 1
    assert (tmp_path / "report.png").stat().st_size > 0
