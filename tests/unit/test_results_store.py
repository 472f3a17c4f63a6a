"""The results store on a real DuckDB file in tmp_path: idempotence, numbers, export."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from dtf.cli import cli
from dtf.cli.results import parse_since
from dtf.core.events import Event, WorkerHealthChanged, WorkerStatusChanged
from dtf.core.model import Outcome
from dtf.core.records import WorkerStatus
from dtf.errors import InvalidRequest
from dtf.results.export import export_table
from dtf.results.ingest import ResultsIngester
from dtf.results.queries import Filters, aggregate, series
from dtf.results.schema import TABLES
from dtf.results.store import ArrowBatch, ResultsStore, ResultsStoreError
from dtf.testing.factories import StateDriver, capabilities, task_spec


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultsStore]:
    opened = ResultsStore.open(tmp_path / "results.duckdb")
    yield opened
    opened.close()


def batch(attempts: list[tuple[str, int, dict[str, Any], list[float]]]) -> ArrowBatch:
    """(task id, attempt, dimensions, values of ``latency_ms``) -> an Arrow batch."""
    attempt_rows, sample_rows = [], []
    for seq, (task_id, number, located, values) in enumerate(attempts):
        dims = {**located, "task_seq": seq}
        attempt_rows.append({"task_id": task_id, "attempt": number, "status": "succeeded", **dims})
        sample_rows.extend(
            {
                "task_id": task_id,
                "attempt": number,
                "name": "latency_ms",
                "sample_index": index,
                "value": value,
                "unit": "ms",
                **dims,
            }
            for index, value in enumerate(values)
        )
    return ArrowBatch(
        {
            "attempts": pa.Table.from_pylist(attempt_rows, schema=TABLES["attempts"].arrow_schema),
            "metric_samples": pa.Table.from_pylist(
                sample_rows, schema=TABLES["metric_samples"].arrow_schema
            ),
        }
    )


def count(store: ResultsStore, table: str) -> int:
    with store.reader() as cursor:
        [(rows,)] = cursor.execute(f"SELECT count(*) FROM {table}").fetchall()
    return int(rows)


CPU = {
    "model": "m1",
    "hardware_class": "cpu",
    "batch_size": 32,
    "run_id": "r1",
    "recorded_at": 10.0,
}
CUDA = {**CPU, "hardware_class": "cuda", "run_id": "r2", "recorded_at": 20.0}
KNOWN = [
    ("a", 1, CPU, [1.0, 2.0, 3.0, 4.0, 5.0]),
    ("b", 1, CPU, [6.0, 7.0, 8.0, 9.0, 10.0]),
    ("c", 1, CUDA, [2.0, 4.0]),
]


def test_writing_the_same_attempts_twice_adds_nothing(store: ResultsStore) -> None:
    first = store.insert(batch(KNOWN))
    again = store.insert(batch(KNOWN))
    assert first == {"attempts": 3, "metric_samples": 12}
    assert again == {"attempts": 0, "metric_samples": 0}
    assert (count(store, "attempts"), count(store, "metric_samples")) == (3, 12)


def test_a_batch_mixing_known_and_new_attempts_writes_only_the_new_ones(
    store: ResultsStore,
) -> None:
    store.insert(batch(KNOWN[:1]))
    written = store.insert(batch([KNOWN[0], ("a", 2, CPU, [11.0])]))
    assert written == {"attempts": 1, "metric_samples": 1}
    with store.reader() as cursor:
        rows = cursor.execute("SELECT attempt, count(*) FROM metric_samples GROUP BY 1 ORDER BY 1")
        assert rows.fetchall() == [(1, 5), (2, 1)]


def test_aggregate_gives_the_known_statistics_per_group(store: ResultsStore) -> None:
    store.insert(batch(KNOWN))
    with store.reader() as cursor:
        groups = aggregate(cursor, ["model", "hardware", "batch_size"], Filters("latency_ms"))
    cpu, cuda = groups
    assert (cpu["model"], cpu["hardware_class"], cpu["batch_size"]) == ("m1", "cpu", 32)
    assert cpu["count"] == 10
    assert cpu["mean"] == pytest.approx(5.5)
    assert cpu["median"] == pytest.approx(5.5)
    assert cpu["p90"] == pytest.approx(9.1)  # linear interpolation at 0.9 * (10 - 1)
    assert cpu["p95"] == pytest.approx(9.55)
    assert cpu["p99"] == pytest.approx(9.91)
    assert cpu["stddev"] == pytest.approx(math.sqrt(82.5 / 9))  # sample standard deviation
    assert (cpu["min"], cpu["max"]) == (1.0, 10.0)
    assert (cuda["count"], cuda["median"], cuda["p90"]) == (2, 3.0, pytest.approx(3.8))
    assert cuda["stddev"] == pytest.approx(math.sqrt(2))


def test_aggregate_filters_and_never_pools_different_metrics(store: ResultsStore) -> None:
    store.insert(batch(KNOWN))
    with store.reader() as cursor:
        by_run = aggregate(cursor, ["hardware"], Filters(run_id="r2"))
        recent = aggregate(cursor, [], Filters("latency_ms", since=15.0))
    assert [(g["hardware_class"], g["name"], g["count"]) for g in by_run] == [
        ("cuda", "latency_ms", 2)
    ]
    assert [g["count"] for g in recent] == [2]


def test_an_unknown_dimension_is_refused_by_name(store: ResultsStore) -> None:
    with store.reader() as cursor, pytest.raises(InvalidRequest, match="'gpu'"):
        aggregate(cursor, ["model", "gpu"], Filters())


def test_series_are_split_by_dimensions_and_ordered_in_time(store: ResultsStore) -> None:
    later_cpu = {**CPU, "recorded_at": 30.0, "commit": "c2"}
    store.insert(batch([*KNOWN, ("d", 1, later_cpu, [0.5])]))
    with store.reader() as cursor:
        found = series(cursor, Filters("latency_ms"))
    cpu, cuda = found
    assert cpu.key["hardware_class"] == "cpu" and cuda.key["hardware_class"] == "cuda"
    assert list(cpu.values) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 0.5]
    assert cpu.labels[0] == "r1" and cpu.labels[-1] == "c2"  # commit, else the run id
    assert cpu.direction == "lower_is_better"
    assert list(cuda.recorded_at) == [20.0, 20.0]


@pytest.mark.parametrize("file_format", ["parquet", "csv", "json"])
def test_export_round_trips(store: ResultsStore, tmp_path: Path, file_format: str) -> None:
    store.insert(batch(KNOWN))
    target = tmp_path / f"samples.{file_format}"
    with store.reader() as cursor:
        assert export_table(cursor, "metric_samples", file_format, target) == 12
    if file_format == "parquet":
        values = pq.read_table(target).column("value").to_pylist()
    elif file_format == "json":
        values = [row["value"] for row in json.loads(target.read_text())]
    else:
        query = f"SELECT value FROM read_csv('{target}')"
        values = [row[0] for row in duckdb.connect().execute(query).fetchall()]
    assert sorted(values) == sorted(v for *_, vs in KNOWN for v in vs)


def test_export_refuses_unknown_tables(store: ResultsStore, tmp_path: Path) -> None:
    with store.reader() as cursor, pytest.raises(InvalidRequest, match="'secrets'"):
        export_table(cursor, "secrets", "csv", tmp_path / "x.csv")


def test_a_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.duckdb"
    ResultsStore.open(path).close()
    with duckdb.connect(str(path)) as connection:
        connection.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(ResultsStoreError, match="version 99"):
        ResultsStore.open(path)


def test_reading_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ResultsStoreError, match=r"nowhere\.duckdb"):
        ResultsStore.open(tmp_path / "nowhere.duckdb", read_only=True)


def run_benchmarks(driver: StateDriver, events: list[Event], count: int) -> None:
    events += driver.register("w1", capabilities(cpu_model="Xeon"), slots=count)
    specs = [
        (f"t{n}", task_spec(type="benchmark", config={"entry_point": "b:run"}))
        for n in range(count)
    ]
    events += driver.submit(*specs, at=1.0)
    for task_id, _ in specs:
        events += driver.start(task_id, at=2.0)
        events += driver.report(task_id, Outcome(metrics={"latency_ms": [1.0, 2.0]}), at=3.0)


def test_ingester_writes_events_once_and_backfill_adds_no_duplicates(
    driver: StateDriver, store: ResultsStore
) -> None:
    events: list[Event] = []
    run_benchmarks(driver, events, 3)
    ingester = ResultsIngester(store, lambda: driver.state, clock=lambda: 5.0)
    ingester.on_events(events)
    ingester.on_events(events)  # the same events again: keyed, not added
    written = ingester.flush()
    assert (written["tasks"], written["attempts"], written["metric_samples"]) == (3, 3, 6)
    assert written["worker_snapshots"] == 1
    assert ingester.backfill() == 0
    assert (count(store, "tasks"), count(store, "metric_samples")) == (3, 6)


def test_backfill_writes_what_the_file_lacks(driver: StateDriver, store: ResultsStore) -> None:
    run_benchmarks(driver, [], 2)
    ingester = ResultsIngester(store, lambda: driver.state)
    assert ingester.backfill() == 2 + 2 + 4  # tasks, attempts, samples
    assert ingester.backfill() == 0
    with store.reader() as cursor:
        [(run_count,)] = cursor.execute("SELECT count(*) FROM runs").fetchall()
    assert run_count == 0  # no run_id labels


def test_cli_aggregates_and_exports_a_results_file(tmp_path: Path) -> None:
    path = tmp_path / "results.duckdb"
    with contextlib.closing(ResultsStore.open(path)) as writer:
        writer.insert(batch(KNOWN))
    runner = CliRunner()
    aggregated = runner.invoke(
        cli,
        [
            "results",
            "aggregate",
            "--db",
            str(path),
            "--by",
            "hardware",
            "--metric",
            "latency_ms",
            "--json",
        ],
    )
    assert aggregated.exit_code == 0, aggregated.output
    groups = json.loads(aggregated.output)["groups"]
    assert [(g["hardware_class"], g["count"]) for g in groups] == [("cpu", 10), ("cuda", 2)]
    target = tmp_path / "out.csv"
    exported = runner.invoke(
        cli, ["results", "export", "--db", str(path), "--format", "csv", "--output", str(target)]
    )
    assert exported.exit_code == 0, exported.output
    assert "wrote 12 rows of metric_samples" in exported.output


def test_cli_names_a_results_file_that_is_not_there(tmp_path: Path) -> None:
    missing = tmp_path / "missing.duckdb"
    result = CliRunner().invoke(cli, ["results", "aggregate", "--db", str(missing)])
    assert result.exit_code == 1
    assert f"no results file at {missing}" in result.output


@pytest.mark.parametrize(
    ("text", "since"),
    [("1700000000", 1_700_000_000.0), ("90s", 910.0), ("30m", -800.0), ("1d", 1000.0 - 86400)],
)
def test_since_takes_epoch_seconds_or_a_duration_ago(text: str, since: float) -> None:
    assert parse_since(text, now=1000.0) == since


def test_a_command_that_changes_a_worker_twice_keeps_both_changes(
    driver: StateDriver, store: ResultsStore
) -> None:
    driver.register("w1")
    events: list[Event] = [
        WorkerStatusChanged(
            "w1", WorkerStatus.ONLINE, WorkerStatus.OFFLINE, "no heartbeat for 30s"
        ),
        WorkerHealthChanged("w1", True, "health 62 (3 faults) is below 70"),
    ]
    ingester = ResultsIngester(store, lambda: driver.state, clock=lambda: 5.0)
    ingester.on_events(events)
    ingester.on_events(events)
    assert ingester.flush()["worker_snapshots"] == 1
    with store.reader() as cursor:
        [(event, reason)] = cursor.execute("SELECT event, reason FROM worker_snapshots").fetchall()
    assert event == "status+health"
    assert reason == "no heartbeat for 30s; health 62 (3 faults) is below 70"
