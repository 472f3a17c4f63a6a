"""Answers from a real DuckDB file in tmp_path, built by hand so the answers are known."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import numpy as np
import pyarrow as pa
import pytest

from dtf.analysis.compare import TestVerdict, Verdict
from dtf.analysis.series import EnvironmentMismatch, Kind
from dtf.errors import InvalidRequest, NotFound
from dtf.results import insights
from dtf.results.alerts import NewPoints, OnlineRegressions
from dtf.results.queries import Filters
from dtf.results.schema import SCHEMA_VERSION, TABLES
from dtf.results.store import ArrowBatch, ResultsStore

CPU = {"model": "resnet", "hardware_class": "cpu", "device_model": "Xeon", "batch_size": 8}
A100 = {**CPU, "hardware_class": "cuda", "device_model": "A100"}
H100 = {**CPU, "hardware_class": "cuda", "device_model": "H100"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultsStore]:
    opened = ResultsStore.open(tmp_path / "results.duckdb")
    opened.insert(table_batch("worker_snapshots", [worker("w1"), worker("w2")]))
    yield opened
    opened.close()


def worker(worker_id: str, cpu_model: str = "Xeon") -> dict[str, Any]:
    return {"worker_id": worker_id, "journal_seq": 1, "cpu_model": cpu_model, "cpu_count": 8}


def table_batch(name: str, rows: list[dict[str, Any]]) -> ArrowBatch:
    return ArrowBatch({name: pa.Table.from_pylist(rows, schema=TABLES[name].arrow_schema)})


class Recorder:
    """Writes attempts one at a time, each later than the last, like the ingester does."""

    def __init__(self, store: ResultsStore) -> None:
        self.store = store
        self.seq = 0

    def benchmark(
        self,
        values: list[float],
        *,
        run_id: str | None = None,
        commit: str | None = None,
        where: dict[str, Any] = CPU,
        name: str = "latency_ms",
        worker_id: str = "w1",
        duration_s: float = 1.0,
    ) -> None:
        self.seq += 1
        common = {
            "task_id": f"t{self.seq}",
            "attempt": 1,
            "task_seq": self.seq,
            "run_id": run_id,
            "commit": commit,
            "worker_id": worker_id,
            **where,
        }
        attempt = {**common, "status": "succeeded", "duration_s": duration_s, "params": "{}"}
        attempt["finished_at"] = 1000.0 + self.seq
        samples = [
            {**common, "name": name, "unit": "ms", "sample_index": index, "value": value}
            | {"config": "{}", "recorded_at": 1000.0 + self.seq}
            for index, value in enumerate(values)
        ]
        batch = table_batch("attempts", [attempt])
        batch.tables.update(table_batch("metric_samples", samples).tables)
        self.store.insert(batch)

    def tests(self, outcomes: dict[str, str], *, commit: str, run_id: str | None = None) -> None:
        self.seq += 1
        common = {"task_id": f"t{self.seq}", "attempt": 1, "run_id": run_id, "commit": commit}
        cases = [
            {**common, "node_id": node_id, "outcome": outcome, "hardware_class": "cpu"}
            | {"recorded_at": 1000.0 + self.seq, "message": "" if outcome == "passed" else "boom"}
            for node_id, outcome in outcomes.items()
        ]
        batch = table_batch("attempts", [{**common, "status": "succeeded"}])
        batch.tables.update(table_batch("test_cases", cases).tables)
        self.store.insert(batch)


def noisy(center: float, count: int, seed: int, noise: float = 0.01) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(v) for v in center * (1.0 + noise * rng.standard_normal(count))]


def test_a_planted_ten_percent_step_is_one_alert_naming_its_commit_range(
    store: ResultsStore,
) -> None:
    recorder = Recorder(store)
    for commit in range(30):
        center = 100.0 if commit < 15 else 110.0
        recorder.benchmark(noisy(center, 3, seed=commit), commit=f"c{commit:02d}")
        # A second model that never changes, in the same family:
        recorder.benchmark(noisy(50.0, 3, seed=100 + commit), commit=f"c{commit:02d}", where=A100)
    with store.reader() as cursor:
        report = insights.regressions(cursor, Filters(metric="latency_ms"))
        later = insights.regressions(cursor, Filters(), since=1000.0 + recorder.seq + 1)
    [alert] = report.alerts
    assert (alert.last_good_key, alert.first_bad_key) == ("c14", "c15")
    assert alert.kind is Kind.REGRESSION
    assert alert.relative_change == pytest.approx(0.10, abs=0.02)
    assert dict(alert.labels)["hardware_class"] == "cpu"
    assert [(g.last_good_key, g.first_bad_key) for g in report.groups] == [("c14", "c15")]
    assert later.alerts == () and later.groups == ()
    assert msgspec.json.decode(msgspec.json.encode(report))["alerts"][0]["first_bad_key"] == "c15"


def test_regressions_of_an_unknown_metric_say_so(store: ResultsStore) -> None:
    with store.reader() as cursor, pytest.raises(NotFound, match="'nope_ms'"):
        insights.regressions(cursor, Filters(metric="nope_ms"))


def test_clearly_different_runs_are_slower_and_faster_identical_ones_no_change(
    store: ResultsStore,
) -> None:
    recorder = Recorder(store)
    recorder.benchmark(noisy(100.0, 20, seed=1), run_id="a")
    recorder.benchmark(noisy(120.0, 20, seed=2), run_id="b")
    recorder.benchmark(noisy(100.0, 20, seed=1), run_id="c")
    with store.reader() as cursor:
        slower = insights.compare_runs(cursor, "a", "b")
        faster = insights.compare_runs(cursor, "b", "a")
        same = insights.compare_runs(cursor, "a", "c")
    [metric] = slower.metrics
    assert metric.comparison.verdict is Verdict.REGRESSED
    assert "slower" in metric.comparison.summary
    assert metric.key == {"model": "resnet", "batch_size": 8, "precision": None, "config": "{}"}
    assert metric.environment["device_model"] == "Xeon"
    assert faster.metrics[0].comparison.verdict is Verdict.IMPROVED
    assert "faster" in faster.metrics[0].comparison.summary
    assert same.metrics[0].comparison.verdict is Verdict.NO_CHANGE
    assert slower.refused == () and slower.only_in_a == ()


def test_metrics_measured_on_different_devices_are_refused(store: ResultsStore) -> None:
    recorder = Recorder(store)
    recorder.benchmark(noisy(100.0, 10, seed=1), run_id="g", where=A100)
    recorder.benchmark(noisy(100.0, 10, seed=2), run_id="h", where=H100)
    with store.reader() as cursor, pytest.raises(EnvironmentMismatch, match="'A100' != 'H100'"):
        insights.compare_runs(cursor, "g", "h")
    recorder.tests({"test_x.py::test_a": "passed"}, commit="x", run_id="g")
    recorder.tests({"test_x.py::test_a": "failed"}, commit="y", run_id="h")
    with store.reader() as cursor:
        comparison = insights.compare_runs(cursor, "g", "h")
    assert comparison.metrics == ()
    [refused] = comparison.refused
    assert refused.metric == "latency_ms"
    assert "device_model: 'A100' != 'H100'" in refused.differences
    assert [t.node_id for t in comparison.tests] == ["test_x.py::test_a"]


def test_comparing_an_unknown_run_names_it(store: ResultsStore) -> None:
    Recorder(store).benchmark([1.0], run_id="a")
    with store.reader() as cursor, pytest.raises(NotFound, match="'zzz'"):
        insights.compare_runs(cursor, "a", "zzz")


def test_runs_with_nothing_in_common_are_not_enough_data(store: ResultsStore) -> None:
    recorder = Recorder(store)
    recorder.benchmark([1.0, 2.0], run_id="a", name="latency_ms")
    recorder.benchmark([1.0, 2.0], run_id="b", name="memory_mb")
    with store.reader() as cursor, pytest.raises(InvalidRequest, match="nothing to compare"):
        insights.compare_runs(cursor, "a", "b")


def test_newly_failing_tests_are_named_in_a_comparison(store: ResultsStore) -> None:
    recorder = Recorder(store)
    for _ in range(6):
        recorder.tests({"t.py::ok": "passed", "t.py::broke": "passed"}, commit="x", run_id="a")
        recorder.tests({"t.py::ok": "passed", "t.py::broke": "failed"}, commit="y", run_id="b")
    with store.reader() as cursor:
        tests = insights.compare_runs(cursor, "a", "b").tests
    assert [(t.node_id, t.verdict) for t in tests] == [
        ("t.py::broke", TestVerdict.NEWLY_FAILING),
        ("t.py::ok", TestVerdict.NO_CHANGE),
    ]


def test_a_test_that_passes_and_fails_on_one_commit_is_flaky(store: ResultsStore) -> None:
    recorder = Recorder(store)
    recorder.tests({"t.py::flaky": "passed", "t.py::steady": "passed"}, commit="c1")
    recorder.tests({"t.py::flaky": "failed", "t.py::steady": "passed"}, commit="c1")  # a rerun
    recorder.tests({"t.py::flaky": "failed", "t.py::steady": "failed"}, commit="c2")  # broken
    with store.reader() as cursor:
        [flaky] = insights.flaky_tests(cursor)
    assert flaky.node_id == "t.py::flaky"
    assert flaky.overall.flaky_revisions == 1
    assert flaky.last_failure_message == "boom"


def test_a_rising_latency_trends_worse(store: ResultsStore) -> None:
    recorder = Recorder(store)
    for commit in range(12):
        recorder.benchmark([100.0 + 2.0 * commit], commit=f"c{commit}")
    with store.reader() as cursor:
        [found] = insights.trends(cursor, Filters(metric="latency_ms"))
    assert found.key["model"] == "resnet"
    assert found.trend.verdict == "worsening"
    assert found.trend.slope == pytest.approx(2.0)
    assert found.trend.forecast is not None and found.trend.forecast.steps == 5


def test_one_slow_attempt_is_an_anomaly_with_its_score(store: ResultsStore) -> None:
    recorder = Recorder(store)
    for commit in range(10):
        recorder.benchmark([10.0 + 0.1 * (commit % 3)], commit=f"c{commit}", duration_s=5.0)
    recorder.benchmark([10.0], commit="c10", duration_s=60.0)
    with store.reader() as cursor:
        findings = insights.anomalies(cursor)
    durations = [g for g in findings.groups if g.subject == "task durations"]
    [anomaly] = durations[0].report.anomalies
    assert anomaly.label == f"t{recorder.seq} attempt 1"
    assert anomaly.score > 3.5
    assert findings.groups[-1].subject == "workers"
    assert "too few" in findings.groups[-1].report.summary


def test_the_online_check_raises_one_alert_per_step_and_updates_it(
    store: ResultsStore, caplog: pytest.LogCaptureFixture
) -> None:
    recorder, online = Recorder(store), OnlineRegressions(store, clock=lambda: 5.0)
    key = {"name": "latency_ms", "unit": "ms", "precision": None, "config": "{}", **CPU}
    written = []
    with caplog.at_level(logging.INFO, logger="dtf.results.ingest"):
        for commit in range(24):
            center = 100.0 if commit < 16 else 110.0
            recorder.benchmark(noisy(center, 2, seed=commit), commit=f"c{commit:02d}")
            written += online.check([NewPoints(key, [2])])
    assert written, "the step was not detected"
    assert {row["alert_id"] for row in written} == {written[0]["alert_id"]}
    assert [row["times_seen"] for row in written] == list(range(1, len(written) + 1))
    with store.reader() as cursor:
        [alert] = insights.stored_alerts(cursor)
    assert (alert["last_good_key"], alert["first_bad_key"]) == ("c15", "c16")
    assert alert["kind"] == "regression" and alert["times_seen"] == len(written)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "between c15 and c16" in warnings[0].getMessage()

    reopened = OnlineRegressions(store)
    reopened.load()
    recorder.benchmark(noisy(110.0, 2, seed=99), commit="c24")
    [again] = reopened.check([NewPoints(key, [2])])
    assert again["alert_id"] == written[0]["alert_id"]


def test_a_batch_of_many_attempts_is_checked_as_they_came_one_by_one(store: ResultsStore) -> None:
    recorder, online = Recorder(store), OnlineRegressions(store)
    key = {"name": "latency_ms", "unit": "ms", "precision": None, "config": "{}", **CPU}
    for commit in range(24):
        center = 100.0 if commit < 16 else 110.0
        recorder.benchmark(noisy(center, 2, seed=commit), commit=f"c{commit:02d}")
    written = online.check([NewPoints(key, [2] * 24)])
    assert {(row["last_good_key"], row["first_bad_key"]) for row in written} == {("c15", "c16")}
    assert len({row["alert_id"] for row in written}) == 1


def test_a_version_1_file_is_migrated_to_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    ResultsStore.open(path).close()
    with duckdb.connect(str(path)) as connection:
        connection.execute("DROP TABLE regression_alerts")
        connection.execute("UPDATE schema_version SET version = 1")
    ResultsStore.open(path).close()
    with duckdb.connect(str(path), read_only=True) as connection:
        versions = [
            v for (v,) in connection.execute("SELECT version FROM schema_version").fetchall()
        ]
        [(alerts,)] = connection.execute("SELECT count(*) FROM regression_alerts").fetchall()
    assert SCHEMA_VERSION == 2 and sorted(versions) == [1, 2] and alerts == 0
