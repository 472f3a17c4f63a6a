"""Named queries over the results file: aggregation by any dimensions, and series.

Dimension names are checked against ``DIMENSIONS`` (user-facing name ->
column), so nothing a caller passes is ever spliced into SQL; filter values
are bound parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np

from dtf.errors import InvalidRequest
from dtf.results.rows import metric_direction

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
    """One metric's samples at equal dimensions, oldest first (ties: submission order)."""

    key: dict[str, Any]
    values: np.ndarray
    labels: list[str | None]
    recorded_at: np.ndarray
    direction: str


def series(connection: duckdb.DuckDBPyConnection, filters: Filters) -> list[Series]:
    """Every series the filters select. ``labels`` is each point's commit, else its run id."""
    where, values = filters.where()
    key = ", ".join(SERIES_KEY)
    sql = (
        f"SELECT {key}, value, coalesce(commit, run_id) AS label, recorded_at FROM metric_samples "
        f"WHERE {where} ORDER BY {key}, recorded_at, task_seq, attempt, sample_index"
    )
    columns = connection.execute(sql, values).fetchnumpy()
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
    return [
        Series(
            key={name: array[start] for name, array in zip(SERIES_KEY, key_arrays, strict=True)},
            values=values[start:end],
            labels=labels[start:end],
            recorded_at=recorded[start:end],
            direction=metric_direction(str(key_arrays[0][start])),
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
