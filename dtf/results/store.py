"""The results file: a DuckDB database written in Arrow batches.

Idempotence is per attempt: an attempt's row, its metric samples and its test
cases go in together in one transaction, so writing the same attempt twice —
a journal replay, a backfill that overlaps the live stream — never adds a
row. Only the small ``attempts`` table has a primary key; the large
``metric_samples`` table has none, because maintaining an index would slow
bulk inserts several times over. A batch is first inserted as it is: almost
every batch is all new, and the keyed tables' primary keys refuse a row
already in the file, which aborts the whole transaction. Only then is the
batch written again the careful way: its attempts already in the file are
dropped (with their samples), and keyed rows already there are ignored.
Checking every batch against the file instead would cost a scan of the
attempts table per write, growing with the file.

Threads: one connection belongs to the writer; ``insert`` holds a lock while
it writes. Every reader takes its own cursor (a separate DuckDB connection to
the same database, safe to use from its thread), made from a second root
connection under a lock of its own, so queries never touch the writer's
connection and see only committed batches. (The coordinator's queries first
have the ingester write what is pending: ``dtf.results.reads``.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from dtf.errors import DtfError
from dtf.results.schema import SCHEMA_VERSION, TABLES, Table, create_statements

log = logging.getLogger(__name__)

ATTEMPT_CHILDREN = ("metric_samples", "test_cases")


class ResultsStoreError(DtfError):
    """The results file cannot be opened or is not one this version understands."""

    status_code = 503


@dataclass
class ArrowBatch:
    """Arrow tables to insert, by table name; attempt children must come with their attempt."""

    tables: dict[str, pa.Table] = field(default_factory=dict)

    @property
    def row_count(self) -> int:
        return sum(table.num_rows for table in self.tables.values())


class ResultsStore:
    """``ResultsStore.open(path)``; ``insert(batch)``; ``with store.reader() as cursor: ...``"""

    def __init__(self, connection: duckdb.DuckDBPyConnection, path: Path) -> None:
        self.path = path
        self._connection = connection
        self._write_lock = threading.Lock()
        self._reader_root = connection.cursor()
        self._reader_lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> ResultsStore:
        if read_only and not path.exists():
            raise ResultsStoreError(
                f"no results file at {path}; pass the path of a coordinator's results.duckdb"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            raise ResultsStoreError(
                f"cannot open results file {path}: {exc}. Another process (a coordinator, a "
                "`duckdb` shell, `dtf results --db`) may hold it; close it or choose another file"
            ) from None
        connection.execute("SET preserve_insertion_order = false")
        store = cls(connection, path)
        try:
            if not read_only:
                store._create_schema()
                store._warm_up()
            store._check_version()
        except BaseException:
            store.close()  # else the refused file stays open, and locked, in this process
            raise
        return store

    def close(self) -> None:
        with self._reader_lock:
            self._reader_root.close()
        with self._write_lock:
            self._connection.close()

    @contextlib.contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own for one thread's queries."""
        with self._reader_lock:
            cursor = self._reader_root.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def _create_schema(self) -> None:
        for statement in create_statements():
            self._connection.execute(statement)
        [(rows,)] = self._connection.execute("SELECT count(*) FROM schema_version").fetchall()
        if rows == 0:
            self._connection.execute(
                "INSERT INTO schema_version VALUES (?, ?)", [SCHEMA_VERSION, time.time()]
            )

    def _warm_up(self) -> None:
        # DuckDB imports pandas the first time it is handed a Python object
        # (~0.3 s of CPU holding the GIL): better at start-up than in the first
        # write, while the event loop is serving.
        self._connection.from_arrow(pa.table({"warm_up": pa.array([], pa.int32())}))

    def _check_version(self) -> None:
        try:
            found = self._connection.execute("SELECT max(version) FROM schema_version").fetchall()
        except duckdb.CatalogException:
            raise ResultsStoreError(
                f"{self.path} is a DuckDB file but not a dtf results file (no schema_version table)"
            ) from None
        version = found[0][0]
        if version != SCHEMA_VERSION:
            raise ResultsStoreError(
                f"{self.path} has results schema version {version}; this dtf reads version "
                f"{SCHEMA_VERSION}. Export it with the dtf that wrote it, or start a new file "
                "with --db-path"
            )

    def insert(self, batch: ArrowBatch) -> dict[str, int]:
        """Insert what is new in ``batch`` in one transaction; rows inserted per table."""
        with self._write_lock:
            try:
                return self._in_transaction(self._append_all, batch.tables)
            except duckdb.ConstraintException as exc:
                log.debug(
                    "%s: batch holds rows already written (%s); dropping them", self.path, exc
                )
            return self._in_transaction(self._insert_new, batch.tables)

    def _in_transaction(
        self, write: Callable[[dict[str, pa.Table]], dict[str, int]], tables: dict[str, pa.Table]
    ) -> dict[str, int]:
        self._connection.execute("BEGIN TRANSACTION")
        try:
            counts = write(tables)
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")
        return counts

    def _append_all(self, tables: dict[str, pa.Table]) -> dict[str, int]:
        """Every row of ``tables``; a keyed row already in the file raises ConstraintException."""
        for name, table in tables.items():
            if table.num_rows:
                in_order = table.select(TABLES[name].column_names)
                self._connection.from_arrow(in_order).insert_into(name)
        return {name: table.num_rows for name, table in tables.items()}

    def _insert_new(self, tables: dict[str, pa.Table]) -> dict[str, int]:
        tables = dict(tables)
        if "attempts" in tables:
            tables = self._without_known_attempts(tables)
        return {name: self._append_unknown(TABLES[name], table) for name, table in tables.items()}

    def known_keys(self, table_name: str, keys: pa.Table) -> set[tuple[Any, ...]]:
        """Which of ``keys`` (columns: the table's primary key) are in the file already."""
        with self._write_lock:
            return self._known_keys(TABLES[table_name], keys)

    def _known_keys(self, table: Table, keys: pa.Table) -> set[tuple[Any, ...]]:
        key = ", ".join(table.primary_key)
        self._connection.register("candidate_keys", keys.select(list(table.primary_key)))
        try:
            rows = self._connection.execute(
                f"SELECT {key} FROM {table.name} SEMI JOIN candidate_keys USING ({key})"
            ).fetchall()
        finally:
            self._connection.unregister("candidate_keys")
        return set(rows)

    def _without_known_attempts(self, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
        known = self._known_keys(TABLES["attempts"], tables["attempts"])
        if not known:
            return tables
        known_keys = pa.array([_key_text(task_id, attempt) for task_id, attempt in known])
        for name in ("attempts", *ATTEMPT_CHILDREN):
            if name in tables:
                table = tables[name]
                tables[name] = table.filter(pc.invert(pc.is_in(_keys(table), known_keys)))
        return tables

    def _append_unknown(self, table: Table, rows: pa.Table) -> int:
        """The rows whose primary key is not in the file yet (every row of an unkeyed table)."""
        if not rows.num_rows:
            return 0
        columns = ", ".join(table.column_names)
        conflict = "OR IGNORE " if table.primary_key else ""
        self._connection.register("incoming_rows", rows.select(table.column_names))
        try:
            result = self._connection.execute(
                f"INSERT {conflict}INTO {table.name} ({columns}) SELECT {columns} FROM incoming_rows"
            ).fetchall()
        finally:
            self._connection.unregister("incoming_rows")
        return int(result[0][0]) if result else rows.num_rows


def _key_text(task_id: str, attempt: int) -> str:
    return f"{task_id}\x1f{attempt}"


def _keys(table: pa.Table) -> pa.Array:
    attempts = pc.cast(table["attempt"], pa.string())
    return pc.binary_join_element_wise(table["task_id"], attempts, "\x1f")
