"""SqliteJournal on a real temporary SQLite file."""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import dtf
from dtf.journal import sqlite as journal_sqlite
from dtf.journal.base import Journal
from dtf.journal.sqlite import JournalError, SqliteJournal

CRASH_BATCH = 7


def entry(seq: int) -> bytes:
    """An entry that names its own seq, ~300 bytes like an encoded command."""
    return f"{seq:08d}".encode() * 38


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[SqliteJournal]:
    opened = SqliteJournal(tmp_path)
    yield opened
    opened.close()


def test_is_a_journal(journal: SqliteJournal) -> None:
    typed: Journal = journal
    assert typed.last_seq() == 0


def test_append_returns_last_seq_and_read_round_trips(journal: SqliteJournal) -> None:
    assert journal.append([entry(1)]) == 1
    assert journal.append([entry(2), entry(3), entry(4)]) == 4
    assert journal.append([]) == 4
    assert list(journal.read()) == [(seq, entry(seq)) for seq in range(1, 5)]
    assert list(journal.read(after_seq=2)) == [(3, entry(3)), (4, entry(4))]
    assert list(journal.read(after_seq=4)) == []


def test_read_streams_in_chunks(journal: SqliteJournal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_sqlite, "READ_CHUNK_ROWS", 3)
    journal.append([entry(seq) for seq in range(1, 11)])
    reader = journal.read(after_seq=1)
    assert next(reader) == (2, entry(2))
    journal.append([entry(11)])  # appending mid-iteration is allowed and seen
    assert [seq for seq, _ in reader] == list(range(3, 12))


def test_seqs_stay_contiguous_across_reopen(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path) as first:
        first.append([entry(1), entry(2)])
    with SqliteJournal(tmp_path) as second:
        assert second.last_seq() == 2
        assert second.append([entry(3)]) == 3
        assert [seq for seq, _ in second.read()] == [1, 2, 3]


def test_appends_from_other_threads_get_contiguous_seqs(journal: SqliteJournal) -> None:
    def append_batches() -> None:
        for _ in range(20):
            journal.append([b"x", b"y"])

    threads = [threading.Thread(target=append_batches) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [seq for seq, _ in journal.read()] == list(range(1, 161))


def test_append_via_asyncio_to_thread(journal: SqliteJournal) -> None:
    last = asyncio.run(asyncio.to_thread(journal.append, [entry(1), entry(2)]))
    assert last == 2


def test_newest_snapshot_wins_and_only_a_few_are_kept(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path, snapshots_kept=2) as journal:
        assert journal.load_snapshot() is None
        journal.append([entry(seq) for seq in range(1, 6)])
        for seq in (1, 3, 2, 5, 4):
            journal.save_snapshot(seq, f"state@{seq}".encode())
        assert journal.load_snapshot() == (5, b"state@5")
    with sqlite3.connect(tmp_path / "journal.sqlite3") as raw:
        kept = [row[0] for row in raw.execute("SELECT seq FROM snapshots ORDER BY seq")]
    raw.close()
    assert kept == [4, 5]


def test_snapshot_beyond_the_last_entry_is_refused(journal: SqliteJournal) -> None:
    journal.append([entry(1)])
    with pytest.raises(JournalError, match="seq 2"):
        journal.save_snapshot(2, b"state")
    assert journal.load_snapshot() is None


def test_compaction_never_deletes_beyond_the_newest_snapshot(journal: SqliteJournal) -> None:
    journal.append([entry(seq) for seq in range(1, 11)])
    journal.compact(through_seq=100)  # no snapshot: nothing is covered
    assert next(journal.read()) == (1, entry(1))
    journal.save_snapshot(6, b"state@6")
    journal.compact(through_seq=100)
    assert list(journal.read(after_seq=6)) == [(seq, entry(seq)) for seq in range(7, 11)]
    assert journal.last_seq() == 10


def test_compaction_deletes_through_the_given_seq(journal: SqliteJournal) -> None:
    journal.append([entry(seq) for seq in range(1, 11)])
    journal.save_snapshot(8, b"state@8")
    journal.compact(through_seq=3)
    assert next(journal.read(after_seq=3)) == (4, entry(4))
    with pytest.raises(JournalError, match=re.escape("no entries 3..3")):
        list(journal.read(after_seq=2))


def test_reading_compacted_entries_is_an_error(journal: SqliteJournal) -> None:
    journal.append([entry(seq) for seq in range(1, 6)])
    journal.save_snapshot(3, b"state@3")
    journal.compact(through_seq=3)
    with pytest.raises(JournalError, match=re.escape("no entries 1..3")):
        list(journal.read())


def test_seqs_keep_increasing_after_compacting_everything(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path) as journal:
        journal.append([entry(1), entry(2), entry(3)])
        journal.save_snapshot(3, b"state@3")
        journal.compact(through_seq=3)
    with SqliteJournal(tmp_path) as reopened:
        assert reopened.last_seq() == 3
        assert list(reopened.read(after_seq=3)) == []
        assert reopened.append([entry(4)]) == 4


def test_a_file_from_a_newer_dtf_is_refused(tmp_path: Path) -> None:
    SqliteJournal(tmp_path).close()
    with sqlite3.connect(tmp_path / "journal.sqlite3") as raw:
        raw.execute("PRAGMA user_version=99")
    raw.close()
    with pytest.raises(JournalError, match="newer dtf"):
        SqliteJournal(tmp_path)


def test_a_corrupt_file_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"this is not an sqlite database at all" * 100)
    with pytest.raises(JournalError, match=f"{re.escape(str(path))}.*corrupt"):
        SqliteJournal(tmp_path)


def test_an_unusable_data_dir_is_named_in_the_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(JournalError, match=re.escape(str(not_a_dir))):
        SqliteJournal(not_a_dir / "data")


def test_a_closed_journal_says_so(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path)
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        journal.append([b"x"])


CRASH_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from dtf.journal.sqlite import SqliteJournal

    journal = SqliteJournal(Path(sys.argv[1]))
    batch = int(sys.argv[2])
    for batch_number in range(1_000_000):
        first = batch_number * batch + 1
        journal.append([(f"{seq:08d}".encode() * 38) for seq in range(first, first + batch)])
        if batch_number == 20:
            print("appending", flush=True)
    """
)


def test_kill_9_mid_append_leaves_a_contiguous_prefix_of_whole_batches(tmp_path: Path) -> None:
    repo_root = Path(dtf.__file__).resolve().parent.parent
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, str(tmp_path), str(CRASH_BATCH)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )
    try:
        assert wait_for_line(child, timeout_s=60) == b"appending\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert child.stdout is not None
        child.stdout.close()
    with SqliteJournal(tmp_path) as reopened:
        entries = list(reopened.read())
    assert len(entries) >= 21 * CRASH_BATCH
    assert len(entries) % CRASH_BATCH == 0
    assert entries == [(seq, entry(seq)) for seq in range(1, len(entries) + 1)]


def wait_for_line(child: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    assert child.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=timeout_s):
            raise AssertionError(f"the child wrote nothing in {timeout_s} s")
    return child.stdout.readline()
