"""The results file's tables, each column named once with its DuckDB and Arrow type.

The DDL and the Arrow schemas the store inserts are both derived from
``TABLES``, so they cannot drift apart. ``SCHEMA_VERSION`` is written to the
``schema_version`` table; a file written by another version is refused with
a message rather than half-read.

Keys: a task row is written once, when the task is terminal (``task_id``);
an attempt row, with all of its metric samples and test cases, is written
once, in one transaction, when the attempt has finished (``task_id``,
``attempt``); a worker snapshot is keyed by (``worker_id``, ``journal_seq``):
one row per command that changed the worker, naming each change (``status+health``).
``runs`` is a view over ``tasks``. ``regression_alerts`` is written by the
online check at ingest: one row per state of an alert, keyed by (``alert_id``,
``times_seen``), so a step seen again adds a row and the newest row of an
alert is its current state.

Migrations: ``MIGRATIONS[n]`` holds the statements that bring a version-``n``
file to version ``n + 1``; new tables need none, since every table's DDL is
``CREATE TABLE IF NOT EXISTS``. Each step ends by recording the new version,
guarded so it runs only on a file at version ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    arrow_type: pa.DataType


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(c.name, c.arrow_type) for c in self.columns])

    def ddl(self) -> str:
        lines = [f"    {c.name} {c.sql_type}" for c in self.columns]
        if self.primary_key:
            lines.append(f"    PRIMARY KEY ({', '.join(self.primary_key)})")
        body = ",\n".join(lines)
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n{body}\n)"


def _text(name: str) -> Column:
    return Column(name, "VARCHAR", pa.string())


def _real(name: str) -> Column:
    return Column(name, "DOUBLE", pa.float64())


def _integer(name: str) -> Column:
    return Column(name, "INTEGER", pa.int32())


def _big(name: str) -> Column:
    return Column(name, "BIGINT", pa.int64())


def _texts(name: str) -> Column:
    return Column(name, "VARCHAR[]", pa.list_(pa.string()))


# Where a result comes from; shared by attempts, metric samples and test cases.
LOCATION = (_text("run_id"), _text("commit"), _text("model"), _text("hardware_class"))

TASKS = Table(
    "tasks",
    (
        _text("task_id"),
        _big("task_seq"),
        _text("task_type"),
        _text("name"),
        _text("status"),
        _text("status_reason"),
        _integer("priority"),
        _real("submitted_at"),
        _real("finished_at"),
        _integer("attempts"),
        _text("run_id"),
        _text("commit"),
        _text("model"),
        _text("labels"),
    ),
    primary_key=("task_id",),
)

ATTEMPTS = Table(
    "attempts",
    (
        _text("task_id"),
        _integer("attempt"),
        _big("task_seq"),
        _text("worker_id"),
        _text("status"),
        _text("failure"),
        _text("failure_type"),
        _text("reason"),
        _text("recovery"),
        _real("assigned_at"),
        _real("started_at"),
        _real("finished_at"),
        _real("duration_s"),
        _integer("exit_code"),
        _integer("signal"),
        *LOCATION,
        _text("device_model"),
        _big("batch_size"),
        _text("precision"),
        _text("params"),
        _text("injected_fault"),
        _integer("metric_samples"),
        _integer("test_cases"),
    ),
    primary_key=("task_id", "attempt"),
)

METRIC_SAMPLES = Table(
    "metric_samples",
    (
        _text("task_id"),
        _integer("attempt"),
        _text("name"),
        _integer("sample_index"),
        _real("value"),
        _text("unit"),
        *LOCATION,
        _text("device_model"),
        _big("batch_size"),
        _text("precision"),
        _text("config"),
        _text("worker_id"),
        _real("recorded_at"),
        _big("task_seq"),
    ),
)

TEST_CASES = Table(
    "test_cases",
    (
        _text("task_id"),
        _integer("attempt"),
        _text("node_id"),
        _text("outcome"),
        _real("duration_s"),
        _text("message"),
        *LOCATION,
        _text("worker_id"),
        _real("recorded_at"),
    ),
)

WORKER_SNAPSHOTS = Table(
    "worker_snapshots",
    (
        _text("worker_id"),
        _big("journal_seq"),
        _real("recorded_at"),
        _text("event"),
        _text("reason"),
        _text("status"),
        Column("quarantined", "BOOLEAN", pa.bool_()),
        _real("health_score"),
        _integer("slots"),
        _integer("busy_slots"),
        _texts("hardware"),
        _text("cpu_model"),
        _integer("cpu_count"),
        _real("memory_gb"),
        _texts("gpu_models"),
        _integer("tasks_completed"),
        _integer("tasks_failed"),
    ),
    primary_key=("worker_id", "journal_seq"),
)

# The dimensions of a metric series (``dtf.results.queries.SERIES_KEY``) in column form.
SERIES_COLUMNS = (
    _text("name"),
    _text("unit"),
    _text("model"),
    _text("hardware_class"),
    _text("device_model"),
    _big("batch_size"),
    _text("precision"),
    _text("config"),
)

REGRESSION_ALERTS = Table(
    "regression_alerts",
    (
        _text("alert_id"),
        _integer("times_seen"),
        _real("first_seen_at"),
        _real("recorded_at"),
        *SERIES_COLUMNS,
        _text("direction"),
        _text("kind"),
        _big("change_index"),
        _big("checked_index"),
        _big("seen_until_index"),
        _text("last_good_key"),
        _text("first_bad_key"),
        _real("before_median"),
        _real("after_median"),
        _real("shift"),
        _real("relative_change"),
        _real("p_value"),
        _real("q_value"),
        _text("environment_fingerprint"),
        _text("summary"),
    ),
    primary_key=("alert_id", "times_seen"),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (TASKS, ATTEMPTS, METRIC_SAMPLES, TEST_CASES, WORKER_SNAPSHOTS, REGRESSION_ALERTS)
}

RUNS_VIEW = """CREATE OR REPLACE VIEW runs AS
SELECT
    run_id,
    any_value(commit) AS commit,
    count(*) AS tasks,
    count(*) FILTER (WHERE status = 'completed') AS completed,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
    min(submitted_at) AS first_submitted_at,
    max(finished_at) AS last_finished_at
FROM tasks
WHERE run_id IS NOT NULL
GROUP BY run_id"""

VERSION_DDL = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, created_at DOUBLE)"

EXPORTABLE = (*TABLES, "runs")


# Version 2 added regression_alerts, which its CREATE TABLE IF NOT EXISTS makes.
MIGRATIONS: dict[int, tuple[str, ...]] = {1: ()}


def migration_statements() -> list[str]:
    """Bring an older file up to ``SCHEMA_VERSION``; a no-op on an empty or current file."""
    statements: list[str] = []
    for version, steps in sorted(MIGRATIONS.items()):
        statements.extend(steps)
        statements.append(
            f"INSERT INTO schema_version SELECT {version + 1}, epoch(current_timestamp) "
            f"WHERE (SELECT max(version) FROM schema_version) = {version}"
        )
    return statements


def create_statements() -> list[str]:
    """Every statement that makes an empty file a results file, or migrates an older one
    (all idempotent)."""
    tables = [table.ddl() for table in TABLES.values()]
    return [VERSION_DDL, *tables, RUNS_VIEW, *migration_statements()]
