"""The embedded journal: commands and snapshots in one SQLite file.

The file is ``<data_dir>/journal.sqlite3`` in WAL mode with ``synchronous=FULL``,
so a committed append survives kill -9 and power loss. Entries get contiguous
sequence numbers from 1; compaction deletes old entries but never reuses their
numbers, because the next number is derived from the newest entry *or* the
newest snapshot, and compaction never deletes beyond the newest snapshot.

Threading contract: one ``SqliteJournal`` may be used from any thread (the
coordinator appends from a worker thread via ``asyncio.to_thread``). Every
statement runs under one lock, so calls are serialised; ``read`` takes the lock
per chunk, never across a ``yield``, so appending while iterating is allowed
and the iterator also yields entries appended meanwhile.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from dtf.errors import DtfError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FILE_NAME = "journal.sqlite3"
READ_CHUNK_ROWS = 1000

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS snapshots (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)",
)
_LAST_SEQ = (
    "SELECT max(coalesce((SELECT max(seq) FROM entries), 0),"
    " coalesce((SELECT max(seq) FROM snapshots), 0))"
)
_NEWEST_SNAPSHOT_SEQ = "SELECT coalesce(max(seq), 0) FROM snapshots"
_INSERT_ENTRY = "INSERT INTO entries (seq, data) VALUES (?, ?)"
_READ_CHUNK = "SELECT seq, data FROM entries WHERE seq > ? ORDER BY seq LIMIT ?"
_INSERT_SNAPSHOT = "INSERT OR REPLACE INTO snapshots (seq, data) VALUES (?, ?)"
_PRUNE_SNAPSHOTS = (
    "DELETE FROM snapshots WHERE seq NOT IN (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)"
)
_NEWEST_SNAPSHOT = "SELECT seq, data FROM snapshots ORDER BY seq DESC LIMIT 1"
_DELETE_ENTRIES_UP_TO = "DELETE FROM entries WHERE seq <= ?"


class JournalError(DtfError):
    """The journal file cannot be opened, read or written."""

    status_code = 500


class SqliteJournal:
    """A ``dtf.journal.base.Journal`` kept in ``<data_dir>/journal.sqlite3``."""

    def __init__(self, data_dir: Path, *, snapshots_kept: int = 3) -> None:
        if snapshots_kept < 1:
            raise ValueError(f"snapshots_kept must be at least 1, got {snapshots_kept}")
        self.path = Path(data_dir) / FILE_NAME
        self._snapshots_kept = snapshots_kept
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = _open(self.path)

    def append(self, entries: Sequence[bytes]) -> int:
        """Append ``entries`` in one fsync'd transaction; return the last seq."""
        with self._lock:
            connection = self._open_connection()
            if not entries:
                return int(connection.execute(_LAST_SEQ).fetchone()[0])
            with _Transaction(connection, self.path, "append entries"):
                first_seq = int(connection.execute(_LAST_SEQ).fetchone()[0]) + 1
                rows = ((first_seq + offset, entry) for offset, entry in enumerate(entries))
                connection.executemany(_INSERT_ENTRY, rows)
            return first_seq + len(entries) - 1

    def read(self, after_seq: int = 0) -> Iterator[tuple[int, bytes]]:
        """Yield ``(seq, entry)`` for every entry after ``after_seq``, in order,
        fetching ``READ_CHUNK_ROWS`` rows at a time.

        Raises ``JournalError`` if entries right after ``after_seq`` were
        compacted away: read from the newest snapshot's seq instead."""
        expected_seq = after_seq + 1
        while True:
            rows = self._read_chunk(expected_seq - 1)
            if not rows:
                return
            for seq, data in rows:
                if seq != expected_seq:
                    raise self._gap_error(expected_seq, seq)
                yield seq, data
                expected_seq += 1

    def last_seq(self) -> int:
        with self._lock:
            return int(self._open_connection().execute(_LAST_SEQ).fetchone()[0])

    def save_snapshot(self, seq: int, data: bytes) -> None:
        """Store the state after entry ``seq``; keep only the newest
        ``snapshots_kept`` snapshots."""
        with self._lock:
            connection = self._open_connection()
            with _Transaction(connection, self.path, f"save the snapshot at seq {seq}"):
                last_seq = int(connection.execute(_LAST_SEQ).fetchone()[0])
                if not 0 < seq <= last_seq:
                    raise JournalError(
                        f"cannot save a snapshot at seq {seq}: the journal {self.path} "
                        f"holds seqs 1..{last_seq}; snapshot a state that was journaled",
                        field="seq",
                    )
                connection.execute(_INSERT_SNAPSHOT, (seq, data))
                connection.execute(_PRUNE_SNAPSHOTS, (self._snapshots_kept,))

    def load_snapshot(self) -> tuple[int, bytes] | None:
        with self._lock:
            row = self._open_connection().execute(_NEWEST_SNAPSHOT).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def compact(self, through_seq: int) -> None:
        """Delete entries with ``seq <= through_seq`` that the newest snapshot
        covers; entries after the newest snapshot are never deleted."""
        with self._lock:
            connection = self._open_connection()
            with _Transaction(connection, self.path, f"compact through seq {through_seq}"):
                newest_snapshot_seq = int(connection.execute(_NEWEST_SNAPSHOT_SEQ).fetchone()[0])
                up_to_seq = min(through_seq, newest_snapshot_seq)
                deleted = connection.execute(_DELETE_ENTRIES_UP_TO, (up_to_seq,)).rowcount
        logger.info(
            "compacted %d journal entries up to seq %d",
            deleted,
            up_to_seq,
            extra={"event": "journal_compacted", "up_to_seq": up_to_seq},
        )

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> SqliteJournal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _read_chunk(self, after_seq: int) -> list[tuple[int, bytes]]:
        with self._lock:
            cursor = self._open_connection().execute(_READ_CHUNK, (after_seq, READ_CHUNK_ROWS))
            return [(int(seq), bytes(data)) for seq, data in cursor]

    def _gap_error(self, expected_seq: int, found_seq: int) -> JournalError:
        with self._lock:
            snapshot_seq = int(self._open_connection().execute(_NEWEST_SNAPSHOT_SEQ).fetchone()[0])
        return JournalError(
            f"the journal {self.path} has no entries {expected_seq}..{found_seq - 1} "
            f"(compacted up to the snapshot at seq {snapshot_seq}); "
            f"load the snapshot and read after seq {snapshot_seq}",
            field="after_seq",
        )

    def _open_connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise JournalError(f"the journal {self.path} is closed; open a new SqliteJournal")
        return self._connection


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error; SQLite
    errors become ``JournalError`` naming the file and the action."""

    def __init__(self, connection: sqlite3.Connection, path: Path, action: str) -> None:
        self._connection = connection
        self._path = path
        self._action = action

    def __enter__(self) -> None:
        self._run("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            try:
                self._run("COMMIT")
            finally:
                self._rollback_if_open()
            return
        self._rollback_if_open()
        if isinstance(exc, sqlite3.Error):
            raise JournalError(
                f"could not {self._action} in the journal {self._path}: {exc}; "
                "check free disk space and that the file is writable"
            ) from exc

    def _rollback_if_open(self) -> None:
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")

    def _run(self, statement: str) -> None:
        try:
            self._connection.execute(statement)
        except sqlite3.Error as error:
            raise JournalError(
                f"could not {self._action} in the journal {self._path} ({statement}): {error}; "
                "check free disk space and that no other process holds the file"
            ) from error


def _open(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise JournalError(
            f"cannot create the data directory {path.parent}: {error}; "
            "pick a --data-dir the coordinator's user can write"
        ) from error
    try:
        connection = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=10.0
        )
    except sqlite3.Error as error:
        raise _open_error(path, error) from error
    try:
        _prepare(connection, path)
    except BaseException as error:
        connection.close()
        if isinstance(error, sqlite3.Error):
            raise _open_error(path, error) from error
        raise
    return connection


def _prepare(connection: sqlite3.Connection, path: Path) -> None:
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"the journal {path} has schema version {version}, written by a newer dtf; "
            f"this dtf reads up to version {SCHEMA_VERSION}: upgrade dtf or use another data dir"
        )
    mode = str(connection.execute("PRAGMA journal_mode=WAL").fetchone()[0])
    if mode.lower() != "wal":
        raise JournalError(
            f"the journal {path} cannot use WAL mode (SQLite kept {mode!r}); "
            "put the data dir on a local file system"
        )
    connection.execute("PRAGMA synchronous=FULL")
    if version < SCHEMA_VERSION:
        connection.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            connection.execute(statement)
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        connection.execute("COMMIT")


def _open_error(path: Path, error: sqlite3.Error) -> JournalError:
    if isinstance(error, sqlite3.OperationalError):
        hint = "check that the coordinator's user can read and write the file and its directory"
    else:
        hint = (
            "it is not a dtf journal or it is corrupt: "
            "move it aside to start empty, or restore a backup"
        )
    return JournalError(f"cannot open the journal {path}: {error}; {hint}")
