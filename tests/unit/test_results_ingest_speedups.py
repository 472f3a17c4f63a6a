"""The results file's at-most-once guarantee on the fast write path, on a real
DuckDB file: a batch is inserted as it is and redone the careful way only when
a keyed row is already in the file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from dtf.core.events import Event
from dtf.core.model import Outcome
from dtf.results.ingest import ResultsIngester
from dtf.results.rows import task_row
from dtf.results.schema import TABLES
from dtf.results.store import ArrowBatch, ResultsStore
from dtf.testing.factories import StateDriver, capabilities, task_spec


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultsStore]:
    opened = ResultsStore.open(tmp_path / "results.duckdb")
    yield opened
    opened.close()


def in_file(store: ResultsStore) -> tuple[int, int, int]:
    """Rows of tasks, attempts and metric samples in the file."""
    return count(store, "tasks"), count(store, "attempts"), count(store, "metric_samples")


def count(store: ResultsStore, table: str) -> int:
    with store.reader() as cursor:
        [(rows,)] = cursor.execute(f"SELECT count(*) FROM {table}").fetchall()
    return int(rows)


def run(driver: StateDriver, task_ids: list[str]) -> list[Event]:
    """Run benchmark tasks to success, two latency samples each; their events."""
    specs = [(t, task_spec(type="benchmark", config={"entry_point": "b:run"})) for t in task_ids]
    events = driver.submit(*specs, at=1.0)
    for task_id in task_ids:
        events += driver.start(task_id, at=2.0)
        events += driver.report(task_id, Outcome(metrics={"latency_ms": [1.0, 2.0]}), at=3.0)
    return events


@pytest.fixture
def driver() -> StateDriver:
    driver = StateDriver()
    driver.register("w1", capabilities(cpu_model="Xeon"), slots=10)
    return driver


def test_events_published_again_after_a_flush_add_nothing(
    driver: StateDriver, store: ResultsStore
) -> None:
    events = run(driver, ["t1", "t2"])
    ingester = ResultsIngester(store, lambda: driver.state)
    ingester.on_events(events)
    assert ingester.flush()["metric_samples"] == 4
    ingester.on_events(events)  # a catch-up that republishes what was written
    written = ingester.flush()
    assert (written["tasks"], written["attempts"], written["metric_samples"]) == (0, 0, 0)
    assert in_file(store) == (2, 2, 4)


def test_a_batch_mixing_known_and_new_attempts_writes_the_new_ones_with_their_samples(
    driver: StateDriver, store: ResultsStore
) -> None:
    first = run(driver, ["t1"])
    ingester = ResultsIngester(store, lambda: driver.state)
    ingester.on_events(first)
    ingester.flush()
    ingester.on_events(first + run(driver, ["t2", "t3"]))
    written = ingester.flush()
    assert (written["tasks"], written["attempts"], written["metric_samples"]) == (2, 2, 4)
    with store.reader() as cursor:
        per_task = cursor.execute(
            "SELECT task_id, count(*) FROM metric_samples GROUP BY task_id ORDER BY task_id"
        ).fetchall()
    assert per_task == [("t1", 2), ("t2", 2), ("t3", 2)]


def test_a_known_task_row_alone_does_not_stop_new_attempts(
    driver: StateDriver, store: ResultsStore
) -> None:
    events = run(driver, ["t1", "t2"])
    task_only = [task_row(driver.state.tasks["t1"])]
    store.insert(
        ArrowBatch({"tasks": pa.Table.from_pylist(task_only, TABLES["tasks"].arrow_schema)})
    )
    ingester = ResultsIngester(store, lambda: driver.state)
    ingester.on_events(events)
    written = ingester.flush()
    assert (written["tasks"], written["attempts"], written["metric_samples"]) == (1, 2, 4)
    assert in_file(store) == (2, 2, 4)


def test_backfill_after_a_restart_writes_only_what_the_file_lacks(
    driver: StateDriver, tmp_path: Path
) -> None:
    path = tmp_path / "results.duckdb"
    events = run(driver, ["t1", "t2"])
    before = ResultsStore.open(path)
    ingester = ResultsIngester(before, lambda: driver.state)
    ingester.on_events(events)
    ingester.flush()
    before.close()
    run(driver, ["t3"])  # journaled, never flushed: the crash came first
    after = ResultsStore.open(path)
    try:
        restarted = ResultsIngester(after, lambda: driver.state)
        assert restarted.backfill() == 1 + 1 + 2  # t3: task, attempt, samples
        restarted.on_events(events)  # the live stream overlapping the backfill
        assert sum(restarted.flush().values()) == 0
        assert (count(after, "attempts"), count(after, "metric_samples")) == (3, 6)
    finally:
        after.close()
