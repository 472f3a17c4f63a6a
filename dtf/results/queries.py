"""Named queries over the results file: aggregation by any dimensions, series, and the
inputs of the analyses in ``dtf.results.insights`` (run samples, test attempts, attempt
durations, worker activity, stored regression alerts).

Dimension names are checked against ``DIMENSIONS`` (user-facing name ->
column), so nothing a caller passes is ever spliced into SQL; filter values
are bound parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from dtf.analysis.units import metric_direction
from dtf.errors import InvalidRequest
from dtf.results.schema import TABLES

DIMENSIONS: dict[str, str] = {
    "metric": "name",
    "name": "name",
    "unit": "unit",
    "model": "model",
    "hardware": "hardware_class",
    "hardware_class": "hardware_class",
    "device": "device_model",
    "device_model": "device_model",
    "batch_size": "batch_size",
    "precision": "precision",
    "config": "config",
    "worker": "worker_id",
    "worker_id": "worker_id",
    "run": "run_id",
    "run_id": "run_id",
    "commit": "commit",
    "task": "task_id",
    "task_id": "task_id",
}
STATISTICS = ("count", "mean", "median", "p90", "p95", "p99", "stddev", "min", "max")
SERIES_KEY = (
    "name",
    "unit",
    "model",
    "hardware_class",
    "device_model",
    "batch_size",
    "precision",
    "config",
)


@dataclass(frozen=True)
class Filters:
    """Which samples count: one metric (``*`` globs), one run, recorded at or after ``since``."""

    metric: str | None = None
    run_id: str | None = None
    since: float | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = ["TRUE"]
        values: list[Any] = []
        if self.metric is not None:
            clauses.append("name GLOB ?" if "*" in self.metric else "name = ?")
            values.append(self.metric)
        if self.run_id is not None:
            clauses.append("run_id = ?")
            values.append(self.run_id)
        if self.since is not None:
            clauses.append("recorded_at >= ?")
            values.append(self.since)
        return " AND ".join(clauses), values


def dimension_columns(by: Sequence[str]) -> list[str]:
    """User-facing names (``hardware``, ``batch_size``) -> columns; unknown ones refused."""
    unknown = [name for name in by if name not in DIMENSIONS]
    if unknown:
        raise InvalidRequest(
            f"unknown dimension {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(sorted(DIMENSIONS))}",
            field="by",
        )
    return list(dict.fromkeys(DIMENSIONS[name] for name in by))


def aggregate(
    connection: duckdb.DuckDBPyConnection, by: Sequence[str], filters: Filters
) -> list[dict[str, Any]]:
    """count, mean, median, p90, p95, p99, stddev, min, max of metric samples per group.

    Samples of different metrics are never pooled: without a single metric
    the metric name is a dimension too.
    """
    columns = dimension_columns(by)
    if (filters.metric is None or "*" in filters.metric) and "name" not in columns:
        columns.append("name")
    where, values = filters.where()
    dimensions = "".join(f"{column}, " for column in columns)
    listed = ", ".join(columns)
    grouping = f"GROUP BY {listed} ORDER BY {listed}" if columns else ""
    sql = (
        f"SELECT {dimensions}count(*), avg(value), "
        "quantile_cont(value, [0.5, 0.9, 0.95, 0.99]), stddev_samp(value), min(value), max(value) "
        f"FROM metric_samples WHERE {where} {grouping}"
    )
    rows = connection.execute(sql, values).fetchall()
    return [_group(columns, row) for row in rows if row[len(columns)]]


def _group(columns: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    count, mean, quantiles, stddev, low, high = row[len(columns) :]
    median, p90, p95, p99 = quantiles
    stats = (count, mean, median, p90, p95, p99, stddev, low, high)
    return {**dict(zip(columns, row, strict=False)), **dict(zip(STATISTICS, stats, strict=True))}


@dataclass(frozen=True)
class Series:
    """One metric's samples at equal dimensions, oldest first (ties: submission order).

    ``worker_ids`` is the worker of each point; ``first_index`` the position of the
    first point in the whole series (not 0 when only its newest points were read).
    """

    key: dict[str, Any]
    values: np.ndarray
    labels: list[str | None]
    recorded_at: np.ndarray
    direction: str
    worker_ids: tuple[str | None, ...] = ()
    first_index: int = 0


SERIES_ORDER = "recorded_at, task_seq, attempt, sample_index"


def series(connection: duckdb.DuckDBPyConnection, filters: Filters) -> list[Series]:
    """Every series the filters select. ``labels`` is each point's commit, else its run id."""
    where, values = filters.where()
    key = ", ".join(SERIES_KEY)
    sql = (
        f"SELECT {key}, value, coalesce(commit, run_id) AS label, recorded_at, worker_id "
        f"FROM metric_samples WHERE {where} ORDER BY {key}, {SERIES_ORDER}"
    )
    columns = connection.execute(sql, values).fetchnumpy()
    return _split_series(columns)


def series_tails(
    connection: duckdb.DuckDBPyConnection, keys: Sequence[Mapping[str, Any]], points: int
) -> list[Series]:
    """The newest ``points`` samples of each series named by ``keys`` (``SERIES_KEY`` dicts)."""
    if not keys:
        return []
    schema = pa.schema([TABLES["metric_samples"].arrow_schema.field(name) for name in SERIES_KEY])
    wanted = pa.Table.from_pylist(
        [{name: key[name] for name in SERIES_KEY} for key in keys], schema
    )
    joined = " AND ".join(f"s.{name} IS NOT DISTINCT FROM k.{name}" for name in SERIES_KEY)
    key = ", ".join(f"s.{name}" for name in SERIES_KEY)
    order = ", ".join(f"s.{column.strip()}" for column in SERIES_ORDER.split(","))
    sql = (
        f"SELECT * FROM (SELECT {key}, s.value, coalesce(s.commit, s.run_id) AS label, "
        f"s.recorded_at, s.worker_id, row_number() OVER w AS position, count(*) OVER "
        f"(PARTITION BY {key}) AS total FROM metric_samples s JOIN wanted_series k ON {joined} "
        f"WINDOW w AS (PARTITION BY {key} ORDER BY {order})) WHERE position > total - ? "
        f"ORDER BY {', '.join(SERIES_KEY)}, position"
    )
    connection.register("wanted_series", wanted)
    try:
        columns = connection.execute(sql, [points]).fetchnumpy()
    finally:
        connection.unregister("wanted_series")
    return _split_series(columns)


def _split_series(columns: dict[str, Any]) -> list[Series]:
    key_arrays = [_objects(columns[name]) for name in SERIES_KEY]
    count = len(columns["value"])
    if count == 0:
        return []
    changed = np.zeros(count, dtype=bool)
    changed[0] = True
    for array in key_arrays:
        changed[1:] |= array[1:] != array[:-1]
    starts = np.flatnonzero(changed)
    ends = [*starts[1:], count]
    values = np.asarray(columns["value"], dtype=np.float64)
    labels = list(_objects(columns["label"]))
    recorded = np.asarray(columns["recorded_at"], dtype=np.float64)
    workers = tuple(_objects(columns["worker_id"]))
    positions = columns.get("position")
    return [
        Series(
            key={
                name: _plain(array[start])
                for name, array in zip(SERIES_KEY, key_arrays, strict=True)
            },
            values=values[start:end],
            labels=labels[start:end],
            recorded_at=recorded[start:end],
            direction=metric_direction(str(key_arrays[0][start])),
            worker_ids=workers[start:end],
            first_index=0 if positions is None else int(positions[start]) - 1,
        )
        for start, end in zip(starts, ends, strict=True)
    ]


def _objects(array: Any) -> np.ndarray:
    """A fetched column as Python values, NULL as None (numpy masks NULLs)."""
    if isinstance(array, np.ma.MaskedArray):
        objects = np.empty(len(array), dtype=object)
        objects[:] = array.tolist()
        return objects
    return np.asarray(array).astype(object)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (keys must encode as JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [column[0] for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _since(column: str, since: float | None) -> tuple[str, list[Any]]:
    return ("TRUE", []) if since is None else (f"{column} >= ?", [since])


def run_exists(connection: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    """Whether any attempt of the file carries this ``run_id`` label."""
    found = connection.execute("SELECT 1 FROM attempts WHERE run_id = ? LIMIT 1", [run_id])
    return bool(found.fetchall())


def run_samples(connection: duckdb.DuckDBPyConnection, run_id: str) -> list[dict[str, Any]]:
    """Every metric sample of one run with its series key and its worker."""
    key = ", ".join(SERIES_KEY)
    return _rows(
        connection.execute(
            f"SELECT {key}, worker_id, value FROM metric_samples WHERE run_id = ? "
            f"ORDER BY {key}, {SERIES_ORDER}",
            [run_id],
        )
    )


def run_test_outcomes(connection: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, list[str]]:
    """Per test node id, the outcome of every attempt of one run, reruns included."""
    rows = connection.execute(
        "SELECT node_id, list(outcome ORDER BY recorded_at, attempt) FROM test_cases "
        "WHERE run_id = ? GROUP BY node_id",
        [run_id],
    ).fetchall()
    return {node_id: list(outcomes) for node_id, outcomes in rows}


def recorded_tests(
    connection: duckdb.DuckDBPyConnection, since: float | None
) -> list[dict[str, Any]]:
    """Every recorded test attempt: the revision is the commit, else the run id, else the task."""
    where, values = _since("recorded_at", since)
    return _rows(
        connection.execute(
            "SELECT node_id, outcome, coalesce(commit, run_id, task_id) AS revision, "
            "coalesce(hardware_class, '') AS hardware_class, coalesce(recorded_at, 0) AS "
            f"recorded_at, coalesce(message, '') AS message FROM test_cases WHERE {where} "
            "ORDER BY recorded_at, task_id, attempt",
            values,
        )
    )


def attempt_durations(
    connection: duckdb.DuckDBPyConnection, since: float | None
) -> list[dict[str, Any]]:
    """Durations of finished attempts, grouped by what ran (model, hardware, params)."""
    where, values = _since("finished_at", since)
    return _rows(
        connection.execute(
            "SELECT model, hardware_class, params, list(duration_s ORDER BY finished_at) AS "
            "durations, list(task_id || ' attempt ' || attempt ORDER BY finished_at) AS labels "
            f"FROM attempts WHERE duration_s IS NOT NULL AND {where} "
            "GROUP BY ALL ORDER BY ALL",
            values,
        )
    )


def worker_activity(
    connection: duckdb.DuckDBPyConnection, since: float | None
) -> list[dict[str, Any]]:
    """Per worker: attempts, the share that did not succeed, and the median duration."""
    where, values = _since("finished_at", since)
    return _rows(
        connection.execute(
            "SELECT worker_id, count(*) AS attempts, "
            "coalesce(avg(CASE status WHEN 'succeeded' THEN 0.0 WHEN 'cancelled' THEN NULL "
            "ELSE 1.0 END), 0.0) AS failure_rate, "
            "coalesce(median(duration_s), 0.0) AS median_duration_s FROM attempts "
            f"WHERE worker_id IS NOT NULL AND {where} GROUP BY worker_id ORDER BY worker_id",
            values,
        )
    )


def worker_machines(connection: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, int | None]]:
    """Each worker's CPU model and count, from its newest snapshot."""
    rows = connection.execute(
        "SELECT worker_id, arg_max(cpu_model, journal_seq), arg_max(cpu_count, journal_seq) "
        "FROM worker_snapshots GROUP BY worker_id"
    ).fetchall()
    return {worker_id: (cpu_model or "", cpu_count) for worker_id, cpu_model, cpu_count in rows}


def latest_alerts(
    connection: duckdb.DuckDBPyConnection, since: float | None = None
) -> list[dict[str, Any]]:
    """The current state of every stored regression alert, newest first."""
    where, values = _since("first_seen_at", since)
    return _rows(
        connection.execute(
            "SELECT * FROM regression_alerts QUALIFY row_number() OVER "
            f"(PARTITION BY alert_id ORDER BY times_seen DESC) = 1 AND {where} "
            "ORDER BY first_seen_at DESC, alert_id",
            values,
        )
    )
