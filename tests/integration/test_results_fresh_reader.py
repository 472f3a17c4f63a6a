"""Results reads never see the file behind the state: ``fresh_reader`` writes what
is pending first, and waits for a write already under way; the coordinator's reads
(``ResultsReads``) wait in threads of their own, never in the default pool."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtf.core.events import Event
from dtf.core.model import Outcome
from dtf.results.ingest import ResultsIngester
from dtf.results.reads import READ_THREADS, ResultsReads
from dtf.results.store import ArrowBatch, ResultsStore
from dtf.testing.factories import StateDriver, capabilities, task_spec

pytestmark = pytest.mark.integration

WAIT_S = 10.0


class GatedStore(ResultsStore):
    """A real store whose inserts, once gated, wait until the test opens the gate."""

    gate: threading.Event | None = None
    inserting: threading.Event
    failing = False

    def insert(self, batch: ArrowBatch) -> dict[str, int]:
        if self.failing:
            raise OSError(28, "No space left on device")
        if self.gate is not None:
            self.inserting.set()
            assert self.gate.wait(WAIT_S)
        return super().insert(batch)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GatedStore]:
    gated = GatedStore.open(tmp_path / "results.duckdb")
    assert isinstance(gated, GatedStore)
    gated.inserting = threading.Event()
    yield gated
    gated.close()


def finished_tasks(driver: StateDriver, count: int) -> list[Event]:
    events = driver.register("w1", capabilities(), slots=count)
    ids = [f"t{n}" for n in range(count)]
    events += driver.submit(*[(task_id, task_spec()) for task_id in ids], at=1.0)
    for task_id in ids:
        events += driver.start(task_id, at=2.0)
        events += driver.report(task_id, Outcome(exit_code=0), at=3.0)
    return events


def attempts_read(ingester: ResultsIngester) -> int:
    with ingester.fresh_reader() as cursor:
        [(rows,)] = cursor.execute("SELECT count(*) FROM attempts").fetchall()
    return int(rows)


def test_a_read_includes_rows_the_interval_has_not_written_yet(store: GatedStore) -> None:
    driver = StateDriver()
    ingester = ResultsIngester(store, lambda: driver.state, flush_interval_s=60.0)
    ingester.start()
    try:
        ingester.on_events(finished_tasks(driver, 3))
        with store.reader() as cursor:
            [(on_file,)] = cursor.execute("SELECT count(*) FROM attempts").fetchall()
        assert on_file == 0  # the writer thread waits for its interval
        assert attempts_read(ingester) == 3
    finally:
        ingester.stop()


def writing(store: GatedStore, tasks: int) -> tuple[ResultsIngester, threading.Thread]:
    """An ingester whose writer thread has taken ``tasks`` finished tasks' rows and
    waits, in the middle of writing them, for the test to open the store's gate."""
    driver = StateDriver()
    ingester = ResultsIngester(store, lambda: driver.state, flush_interval_s=60.0)
    ingester.on_events(finished_tasks(driver, tasks))
    store.gate = threading.Event()
    writer = threading.Thread(target=ingester.flush)
    writer.start()
    assert store.inserting.wait(WAIT_S)  # every pending row is the writer's now
    return ingester, writer


def test_a_read_waits_for_a_write_already_under_way(store: GatedStore) -> None:
    ingester, writer = writing(store, 2)
    seen: list[int] = []
    reader = threading.Thread(target=lambda: seen.append(attempts_read(ingester)))
    reader.start()
    reader.join(0.2)  # time to read the file as it was, were it not waiting
    assert store.gate is not None
    store.gate.set()
    writer.join(WAIT_S)
    reader.join(WAIT_S)
    assert seen == [2]  # not 0: the file as it was before the write


def test_reads_waiting_for_a_write_leave_the_default_thread_pool_free(store: GatedStore) -> None:
    ingester, writer = writing(store, 2)
    reads = ResultsReads(ingester)

    def count(cursor: Any) -> tuple[str, int]:
        [(rows,)] = cursor.execute("SELECT count(*) FROM attempts").fetchall()
        return threading.current_thread().name, int(rows)

    async def main() -> list[tuple[str, int]]:
        waiting = [asyncio.ensure_future(reads.run(count)) for _ in range(4 * READ_THREADS + 8)]
        # the default pool (what the journal writes through) still runs work at once
        await asyncio.wait_for(asyncio.to_thread(lambda: None), WAIT_S)
        assert not any(read.done() for read in waiting)
        assert store.gate is not None
        store.gate.set()
        return await asyncio.wait_for(asyncio.gather(*waiting), WAIT_S)

    try:
        answers = asyncio.run(main())
    finally:
        store.gate.set()
        writer.join(WAIT_S)
        reads.close()
    assert {rows for _, rows in answers} == {2}
    assert all(name.startswith("dtf-results-read") for name, _ in answers)


def test_a_read_while_the_file_cannot_be_written_answers_and_keeps_the_rows(
    store: GatedStore, caplog: pytest.LogCaptureFixture
) -> None:
    driver = StateDriver()
    ingester = ResultsIngester(store, lambda: driver.state, flush_interval_s=60.0)
    ingester.on_events(finished_tasks(driver, 2))
    store.failing = True
    assert attempts_read(ingester) == 0
    assert "No space left on device" in caplog.text
    store.failing = False
    assert attempts_read(ingester) == 2
