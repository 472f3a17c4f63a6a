"""Regression alerts at ingest: the online check over what a written batch added.

How this works: after each written batch with metric samples, the ingester
hands ``OnlineRegressions`` the series that batch touched and how many points
each new attempt added. Each series is checked as it stood after each of
those attempts (``dtf.analysis.online``, Benjamini-Hochberg over the series
checked together), a repeated detection of a step is folded into the open
alert of its series (``merge_detections``), and new and updated alerts are
written to ``regression_alerts``, new ones logged at WARNING. Backfilled rows
are not checked: ``dtf results regressions`` analyses whole series.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa

from dtf.analysis.online import (
    DEFAULT_SETTINGS,
    Detection,
    OnlineSettings,
    SeriesId,
    merge_detections,
    online_checks,
    series_id,
)
from dtf.analysis.series import Kind, Series
from dtf.results import queries
from dtf.results.insights import analysis_series, series_labels
from dtf.results.rows import Row
from dtf.results.schema import TABLES
from dtf.results.store import ArrowBatch, ResultsStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewPoints:
    """A series (``queries.SERIES_KEY``) and the number of points each new attempt added to
    its end, oldest first."""

    key: dict[str, Any]
    attempt_sizes: list[int]


class OnlineRegressions:
    """The check at ingest over the series a written batch touched; keeps each series'
    open detection so that repeats of one step update one alert."""

    def __init__(
        self,
        store: ResultsStore,
        *,
        fdr: float = 0.05,
        settings: OnlineSettings = DEFAULT_SETTINGS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.fdr = fdr
        self.settings = settings
        self._clock = clock
        self._open: dict[SeriesId, Detection] = {}
        self._first_seen_at: dict[str, float] = {}

    def load(self) -> None:
        """Reopen the newest alert of each series from the file (after a restart)."""
        with self.store.reader() as cursor:
            rows = queries.latest_alerts(cursor)
        for row in reversed(rows):
            detection = detection_of(row)
            self._open[series_id(detection)] = detection
            self._first_seen_at[row["alert_id"]] = row["first_seen_at"]

    def check(self, batch: Sequence[NewPoints]) -> list[Row]:
        """Check each series as it stood after each of its new attempts, oldest first (one
        Benjamini-Hochberg family per round); write and return new and updated alert rows."""
        added = {_key_tuple(new.key): new.attempt_sizes for new in batch}
        window = self.settings.baseline_size + self.settings.max_recent
        with self.store.reader() as cursor:
            found = queries.series_tails(
                cursor,
                [new.key for new in batch],
                window + max(map(sum, added.values()), default=0),
            )
            machines = queries.worker_machines(cursor)
        checks = [
            (
                tail,
                analysis_series(tail, machines),
                _ends(len(tail.values), added[_key_tuple(tail.key)]),
            )
            for tail in found
        ]
        rows = []
        for round_number in range(max((len(ends) for *_, ends in checks), default=0)):
            family = [
                (tail, prefix(whole, ends[round_number]))
                for tail, whole, ends in checks
                if round_number < len(ends)
            ]
            by_id = {series_id(s): tail for tail, s in family}
            detections = online_checks(
                [s for _, s in family],
                fdr=self.fdr,
                settings=self.settings,
                opened=self._opened_in(by_id),
            )
            for detection in detections:
                tail = by_id[series_id(detection)]
                row = self._record(shifted(detection, tail.first_index), tail.key)
                if row is not None:
                    rows.append(row)
        self._write(rows)
        return rows

    def _opened_in(self, tails: Mapping[SeriesId, queries.Series]) -> dict[SeriesId, Detection]:
        """The open step of each series, in positions of the newest points read."""
        return {
            key: shifted(self._open[key], -tail.first_index)
            for key, tail in tails.items()
            if key in self._open
        }

    def _write(self, rows: list[Row]) -> None:
        if rows:
            schema = TABLES["regression_alerts"].arrow_schema
            self.store.insert(ArrowBatch({"regression_alerts": pa.Table.from_pylist(rows, schema)}))
        for row in rows:
            level = logging.WARNING if row["times_seen"] == 1 else logging.INFO
            log.log(level, "%s", row["summary"], extra={"event": "regression_alert"})

    def _record(self, detection: Detection, key: Mapping[str, Any]) -> Row | None:
        seen_in = series_id(detection)
        current = self._open.get(seen_in)
        if current is not None and detection.checked_index <= current.seen_until_index:
            return None  # points checked before (a replayed batch): nothing new seen
        merged = merge_detections([current, detection] if current else [detection], self.settings)
        self._open[seen_in] = merged[-1]
        return self._alert_row(merged[-1], key)

    def _alert_row(self, detection: Detection, key: Mapping[str, Any]) -> Row:
        alert_id = alert_id_of(detection)
        now = self._clock()
        first_seen_at = self._first_seen_at.setdefault(alert_id, now)
        fields = msgspec.structs.asdict(detection)
        del fields["metric"], fields["labels"]
        return {
            **{name: key[name] for name in queries.SERIES_KEY},
            **fields,
            "direction": detection.direction.value,
            "kind": detection.kind.value,
            "alert_id": alert_id,
            "first_seen_at": first_seen_at,
            "recorded_at": now,
            "summary": alert_summary(detection, key),
        }


def _key_tuple(key: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(key[name] for name in queries.SERIES_KEY)


def _ends(length: int, attempt_sizes: Sequence[int]) -> list[int]:
    """Where the series ended after each new attempt (the new points are its newest)."""
    end = length - sum(attempt_sizes)
    ends = []
    for size in attempt_sizes:
        end += size
        if end > 0:
            ends.append(end)
    return ends


def prefix(series: Series, end: int) -> Series:
    """The series as it stood when its point ``end - 1`` was the newest."""
    if end == len(series):
        return series
    return dataclasses.replace(
        series,
        values=series.values[:end],
        order_keys=series.order_keys[:end],
        environments=series.environments[:end],
    )


def shifted(detection: Detection, offset: int) -> Detection:
    """Indices in a series' newest points -> positions in the whole series."""
    if offset == 0:
        return detection
    return msgspec.structs.replace(
        detection,
        change_index=detection.change_index + offset,
        checked_index=detection.checked_index + offset,
        seen_until_index=detection.seen_until_index + offset,
    )


def alert_id_of(detection: Detection) -> str:
    """Stable across repeats: the series, its environment and when the step was first seen."""
    identity = [
        detection.metric,
        detection.labels,
        detection.environment_fingerprint,
        detection.checked_index,
    ]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def detection_of(row: Mapping[str, Any]) -> Detection:
    """A stored alert row back as the detection it was written from."""
    fields = {name: row[name] for name in Detection.__struct_fields__ if name in row}
    fields["metric"] = row["name"]
    fields["labels"] = tuple(sorted(series_labels(row).items()))
    return msgspec.convert(fields, Detection)


def alert_summary(detection: Detection, key: Mapping[str, Any]) -> str:
    """One line: what moved, where, by how much, between which commits or runs."""
    unit = f" {key['unit']}" if key.get("unit") else ""
    where = ", ".join(
        f"{name}={key[name]}" for name in ("hardware_class", "batch_size", "precision") if key[name]
    )
    what = "regression" if detection.kind is Kind.REGRESSION else str(detection.kind)
    return (
        f"{what}: {detection.metric} of {key['model']} ({where}) "
        f"{detection.before_median:.4g} -> {detection.after_median:.4g}{unit} "
        f"({100 * detection.relative_change:+.1f} %) between {detection.last_good_key} and "
        f"{detection.first_bad_key}; p={detection.p_value:.2g}, q={detection.q_value:.2g}, "
        f"seen {detection.times_seen}x"
    )
