"""Run reports from a hand-built results file: the model's numbers and each format.

The file holds run ``r9`` (commit ``c9``) and eight earlier runs of one
benchmark series. In ``r9``:

- ``bench-cpu-bs1`` and ``bench-cpu-bs8`` ran once on cpu; ``latency_ms`` is five
  repeats, ``matrices_per_s`` one number. ``bench-cpu-bs8``'s latency is 13 ms
  where the eight earlier runs measured about 10 ms: a regression this run
  introduced.
- ``bench-cuda-bs8`` ran out of memory on cuda (recovery: reduce batch size)
  and then succeeded at batch size 4.
- ``tests-a`` ran twice: ``test_flaky`` failed, then passed on the rerun;
  ``test_always`` failed both times.
- ``tests-b`` ran once: one pass, one failure (its message in terminal colour),
  one error, one xfail, one skip.
- ``tests-c`` lost its worker, then escalated: no test ran at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import junitparser
import msgspec
import pyarrow as pa
import pytest
from click.testing import CliRunner
from junitparser import xunit2

from dtf.cli import cli
from dtf.errors import NotFound
from dtf.reports.build import build_report
from dtf.reports.html import render_html
from dtf.reports.json_report import render_json
from dtf.reports.junit import render_junit
from dtf.reports.markdown import render_markdown
from dtf.reports.model import RunReport
from dtf.results.schema import TABLES
from dtf.results.store import ArrowBatch, ResultsStore

RUN = "r9"
REPEATS = 5
# Deterministic noise of about 1 % around each level.
NOISE = (0.0, 0.08, -0.05, 0.11, -0.09)


class Dataset:
    """Rows for the results tables, appended with sensible defaults."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
        self.seq = 0

    def task(self, task_id: str, task_type: str, status: str, run: str, **extra: Any) -> None:
        self.seq += 1
        self.rows["tasks"].append(
            {
                "task_id": task_id,
                "task_seq": self.seq,
                "task_type": task_type,
                "status": status,
                "run_id": run,
                "commit": "c" + run[1:],
                "submitted_at": 1000.0 * int(run[1:]),
                "finished_at": 1000.0 * int(run[1:]) + 60,
                "attempts": extra.pop("attempts", 1),
                **extra,
            }
        )

    def attempt(self, task_id: str, number: int, run: str, **extra: Any) -> dict[str, Any]:
        row = {
            "task_id": task_id,
            "attempt": number,
            "task_seq": self.seq,
            "worker_id": "w1",
            "status": "succeeded",
            "run_id": run,
            "commit": "c" + run[1:],
            "model": "matmul",
            "hardware_class": "cpu",
            "device_model": "Xeon",
            "finished_at": 1000.0 * int(run[1:]) + 10 * number + self.seq,
            "duration_s": 2.0,
            **extra,
        }
        self.rows["attempts"].append(row)
        return row

    def samples(self, attempt: dict[str, Any], name: str, values: list[float]) -> None:
        keys = ("task_id", "attempt", "run_id", "commit", "model", "hardware_class")
        keys += ("device_model", "batch_size", "precision", "worker_id", "task_seq")
        for index, value in enumerate(values):
            self.rows["metric_samples"].append(
                {
                    **{key: attempt.get(key) for key in keys},
                    "name": name,
                    "sample_index": index,
                    "value": value,
                    "unit": {"latency_ms": "ms", "matrices_per_s": "1/s"}[name],
                    "config": "{}",
                    "recorded_at": attempt["finished_at"],
                }
            )

    def cases(self, attempt: dict[str, Any], *cases: tuple[str, str, str | None]) -> None:
        for node_id, outcome, message in cases:
            self.rows["test_cases"].append(
                {
                    "task_id": attempt["task_id"],
                    "attempt": attempt["attempt"],
                    "node_id": node_id,
                    "outcome": outcome,
                    "duration_s": 0.25,
                    "message": message,
                    "run_id": attempt["run_id"],
                    "commit": attempt["commit"],
                    "hardware_class": attempt["hardware_class"],
                    "worker_id": attempt["worker_id"],
                    "recorded_at": attempt["finished_at"],
                }
            )

    def batch(self) -> ArrowBatch:
        return ArrowBatch(
            {
                name: pa.Table.from_pylist(rows, schema=TABLES[name].arrow_schema)
                for name, rows in self.rows.items()
            }
        )


def latencies(level: float) -> list[float]:
    return [level * (1 + n / 10) for n in NOISE]


def benchmark(data: Dataset, task_id: str, run: str, level: float, **where: Any) -> None:
    data.task(task_id, "benchmark", "completed", run, model="matmul")
    attempt = data.attempt(task_id, 1, run, **where)
    data.samples(attempt, "latency_ms", latencies(level))
    data.samples(attempt, "matrices_per_s", [where["batch_size"] * 1000 / level])


def dataset() -> Dataset:
    data = Dataset()
    for run_number in range(1, 9):
        benchmark(data, f"old-bs8-{run_number}", f"r{run_number}", 10.0, batch_size=8)
    benchmark(data, "bench-cpu-bs1", RUN, 2.0, batch_size=1)
    benchmark(data, "bench-cpu-bs8", RUN, 13.0, batch_size=8)
    cuda = {"hardware_class": "cuda", "device_model": "A100", "worker_id": "w2"}
    data.task("bench-cuda-bs8", "benchmark", "completed", RUN, model="matmul", attempts=2)
    data.attempt(
        "bench-cuda-bs8",
        1,
        RUN,
        **cuda,
        batch_size=8,
        status="failed",
        failure="oom",
        failure_type="resource_exhaustion",
        reason="CUDA out of memory",
        recovery="reduce_batch_size",
    )
    retried = data.attempt("bench-cuda-bs8", 2, RUN, **cuda, batch_size=4)
    data.samples(retried, "latency_ms", latencies(1.0))
    data.samples(retried, "matrices_per_s", [4000.0])

    data.task("tests-a", "test", "completed", RUN, name="suite a", attempts=2)
    first = data.attempt("tests-a", 1, RUN, status="failed", failure="exit_nonzero")
    first = {**first, "failure_type": "software_error", "recovery": "immediate_retry"}
    data.rows["attempts"][-1] = first
    data.cases(
        first,
        ("t.py::test_ok", "passed", None),
        ("t.py::test_flaky", "failed", "boom"),
        ("t.py::TestAlways::test_always", "failed", "nope 1"),
    )
    second = data.attempt("tests-a", 2, RUN, worker_id="w2")
    data.cases(
        second,
        ("t.py::test_ok", "passed", None),
        ("t.py::test_flaky", "passed", None),
        ("t.py::TestAlways::test_always", "failed", "nope 2"),
        ("t.py::test_skip", "skipped", "not here"),
    )
    data.task("tests-b", "test", "completed", RUN)
    only = data.attempt("tests-b", 1, RUN)
    data.cases(
        only,
        ("b.py::test_pass", "passed", None),
        ("b.py::test_broken", "failed", "\x1b[31massert 1 == 2 & <x>"),
        ("b.py::test_error", "error", "fixture exploded"),
        ("b.py::test_xfail", "xfailed", "known bug"),
        ("b.py::test_skip", "skipped", "win32 only"),
    )
    data.task("tests-c", "test", "failed", RUN, status_reason="escalated", attempts=1)
    data.attempt(
        "tests-c",
        1,
        RUN,
        status="lost",
        failure="worker_lost",
        failure_type="worker_crash",
        reason="lease expired",
        recovery="escalate",
        duration_s=None,
    )
    return data


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "results.duckdb"
    store = ResultsStore.open(path)
    store.insert(dataset().batch())
    store.close()
    return path


@pytest.fixture
def report(db_path: Path) -> Iterator[RunReport]:
    store = ResultsStore.open(db_path, read_only=True)
    with store.reader() as cursor:
        yield build_report(cursor, RUN)
    store.close()


def test_summary_counts_tasks_attempts_and_retries(report: RunReport) -> None:
    summary = report.summary
    assert (summary.tasks, summary.attempts, summary.retries, summary.unfinished) == (6, 8, 2, 0)
    assert summary.tasks_by_status == {"completed": 5, "failed": 1}
    assert summary.tasks_by_type == {"benchmark": 3, "test": 3}
    assert summary.attempts_by_status == {"failed": 2, "lost": 1, "succeeded": 5}
    assert (summary.workers, summary.hardware_classes, summary.commits) == (
        ("w1", "w2"),
        ("cpu", "cuda"),
        ("c9",),
    )
    assert summary.duration_s == 60.0


def test_metric_statistics_per_model_hardware_and_batch_size(report: RunReport) -> None:
    rows = {(m.metric, m.hardware_class, m.batch_size): m for m in report.metrics}
    assert set(rows) == {
        (metric, hardware, batch)
        for metric in ("latency_ms", "matrices_per_s")
        for hardware, batch in (("cpu", 1), ("cpu", 8), ("cuda", 4))
    }
    latency = rows[("latency_ms", "cpu", 8)]
    assert (latency.count, latency.median, latency.min, latency.max) == pytest.approx(
        (5, 13.0, 13.0 * 0.991, 13.0 * 1.011)
    )
    assert (latency.unit, latency.direction) == ("ms", "lower_is_better")
    assert rows[("matrices_per_s", "cuda", 4)].median == 4000.0
    [samples] = [s for s in report.samples if s.metric == "latency_ms" and s.batch_size == 1]
    assert samples.values == pytest.approx(latencies(2.0))


def test_failures_by_type_and_hardware_with_the_recovery_taken(report: RunReport) -> None:
    failures = report.failures
    assert failures.failed_attempts == 3
    assert [(f.failure_type, f.hardware_class, f.count) for f in failures.by_type] == [
        ("resource_exhaustion", "cuda", 1),
        ("software_error", "cpu", 1),
        ("worker_crash", "cpu", 1),
    ]
    assert [(r.strategy, r.count) for r in failures.recoveries] == [
        ("escalate", 1),
        ("immediate_retry", 1),
        ("reduce_batch_size", 1),
    ]


def test_every_attempt_of_a_task_is_kept(report: RunReport) -> None:
    tasks = {t.task_id: t for t in report.tasks}
    cuda = tasks["bench-cuda-bs8"]
    assert [(a.attempt, a.status, a.batch_size) for a in cuda.attempts] == [
        (1, "failed", 8),
        (2, "succeeded", 4),
    ]
    assert cuda.attempts[0].metrics == {}
    assert cuda.attempts[1].metrics["latency_ms"] == pytest.approx(latencies(1.0))
    assert [len(a.test_cases) for a in tasks["tests-a"].attempts] == [3, 4]


def test_the_regression_this_run_introduced_is_found_on_its_series(report: RunReport) -> None:
    [finding] = report.regressions
    history = report.histories[finding.series]
    assert (history.metric, history.hardware_class, history.batch_size) == ("latency_ms", "cpu", 8)
    # Eight earlier runs of five repeats, then this run's five.
    assert len(history.points) == 45
    assert [p.in_run for p in history.points] == [False] * 40 + [True] * 5
    alert = finding.alert
    assert finding.introduced_by_run
    assert (alert.change_index, alert.last_good_key, alert.first_bad_key) == (40, "c8", "c9")
    assert alert.relative_change == pytest.approx(0.3, abs=0.02)
    assert report.series_checked == 6
    assert all(not h.alerts for i, h in enumerate(report.histories) if i != finding.series)


def test_an_unknown_run_is_not_found(db_path: Path) -> None:
    store = ResultsStore.open(db_path, read_only=True)
    try:
        with store.reader() as cursor, pytest.raises(NotFound, match="'nope'"):
            build_report(cursor, "nope")
    finally:
        store.close()


def test_json_holds_the_report_with_its_numbers_in_a_stable_order(report: RunReport) -> None:
    text = render_json(report)
    data = json.loads(text)
    assert list(data) == [
        "run_id",
        "summary",
        "metrics",
        "samples",
        "failures",
        "tasks",
        "histories",
        "regressions",
        "series_checked",
    ]
    assert data["summary"]["retries"] == 2
    latency = [m for m in data["metrics"] if m["metric"] == "latency_ms" and m["batch_size"] == 8]
    assert latency[0]["median"] == pytest.approx(13.0)
    assert data["regressions"][0]["alert"]["first_bad_key"] == "c9"
    assert msgspec.json.decode(text, type=RunReport) == report
    assert render_json(report) == text


def test_markdown_has_the_headline_metric_rows_regressions_and_failing_tests(
    report: RunReport,
) -> None:
    text = render_markdown(report)
    assert text.startswith("## dtf run `r9`")
    assert "**6 tasks** (5 completed, 1 failed) · 8 attempts (2 retries)" in text
    assert "| latency_ms | matmul | cpu | 8 | - | 5 | 13 |" in text
    assert "| matrices_per_s | matmul | cuda | 4 | - | 1 | 4000 |" in text
    assert "| latency_ms · matmul · cpu · bs 8 | regression | +30.0% | 10 → 13 ms |" in text
    assert "3 passed, 2 failed, 2 error, 2 skipped, 1 xfailed; 1 passed only on a rerun" in text
    assert "| `b.py::test_broken` | tests-b | failed |" in text
    assert "&lt;x&gt;" in text
    assert "| (attempt 1 ran no test) | tests-c | error | worker_crash: lease expired |" in text
    assert "| resource_exhaustion | cuda | 1 |" in text


def test_junit_reads_cleanly_with_counts_and_reruns(report: RunReport, tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(render_junit(report), encoding="utf-8")
    xml = xunit2.JUnitXml.fromfile(str(path))
    suites = {suite.name: suite for suite in xml}
    assert list(suites) == ["suite a", "tests-b", "tests-c", "benchmark"]
    counted = {name: (s.tests, s.failures, s.errors, s.skipped) for name, s in suites.items()}
    assert counted == {
        "suite a": (4, 1, 0, 1),
        "tests-b": (5, 1, 1, 2),
        "tests-c": (1, 0, 1, 0),
        "benchmark": (3, 0, 0, 0),
    }
    cases = {case.name: case for case in suites["suite a"]}
    assert cases["test_flaky"].is_flaky and cases["test_flaky"].is_passed
    [flake] = cases["test_flaky"].flaky_failures()
    assert flake.message == "attempt 1: boom"
    always = cases["test_always"]
    assert always.classname == "t.TestAlways"
    assert always.is_rerun and [r.message for r in always.rerun_failures()] == ["attempt 1: nope 1"]
    assert isinstance(always.result[0], junitparser.Failure)
    properties = {p.name: p.value for p in suites["suite a"].properties()}
    assert (
        properties["dtf.attempt.1"] == "failed; software_error; recovery immediate_retry; worker w1"
    )
    [broken] = [c for c in suites["tests-b"] if c.name == "test_broken"]
    assert broken.result[0].message == "assert 1 == 2 & <x>"
    benches = {case.name: case for case in suites["benchmark"]}
    cuda = benches["matmul [bench-cuda-bs8]"]
    assert cuda.is_flaky and cuda.is_passed
    metrics = {p.name: p.value for p in cuda.properties()}
    assert metrics["dtf.batch_size"] == "4" and metrics["matrices_per_s"] == "4000.0"
    assert len(metrics["latency_ms"].split(",")) == REPEATS


def test_html_embeds_every_chart_and_plotly_once(report: RunReport) -> None:
    text = render_html(report)
    for chart in ("latency", "throughput", "distributions", "history", "failures", "tests"):
        assert f'id="chart-{chart}"' in text
    assert text.count("window.PlotlyConfig") == 1
    assert "<script src=" not in text
    assert "&lt;x&gt;" in text and "<x>" not in text


def test_the_cli_reads_a_results_file(db_path: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["report", RUN, "--format", "md", "--db", str(db_path)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("## dtf run `r9`")
    output = tmp_path / "report.json"
    written = runner.invoke(
        cli, ["report", RUN, "--format", "json", "--db", str(db_path), "--output", str(output)]
    )
    assert written.exit_code == 0, written.output
    assert json.loads(output.read_text())["run_id"] == RUN
    missing = runner.invoke(cli, ["report", "nope", "--format", "md", "--db", str(db_path)])
    assert missing.exit_code == 1 and "no results of run 'nope'" in missing.output
