"""Answers from the results file: regressions, run comparisons, flaky tests, anomalies, trends.

Glue only: each function reads what it needs through ``dtf.results.queries`` on the
cursor it is given, hands numpy arrays to ``dtf.analysis`` and returns that package's
msgspec Structs, or the small ones below that say where a result belongs;
``msgspec.to_builtins`` or ``msgspec.json.encode`` make JSON of any of them. The CLI, the
REST API and the report generator call these functions: their signatures are the contract.

The environment of a point is its hardware class, device model, batch size, precision,
other params (``config``) and the CPU model and count of the worker that measured it (its
newest snapshot). A series' points from different environments are never compared with
each other, and samples of one metric from two runs measured in different environments
are refused, named in ``RunComparison.refused``.

``trends`` and ``anomalies`` import statsmodels and scikit-learn (seconds) on first use,
so importing this module stays cheap for the coordinator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from msgspec import Struct

from dtf.analysis.compare import Comparison, TestComparison, compare_samples, compare_tests
from dtf.analysis.flaky import FlakyTest, TestAttempt
from dtf.analysis.flaky import flaky_tests as find_flaky_tests
from dtf.analysis.regressions import RegressionReport, detect_regressions, group_by_commit_range
from dtf.analysis.series import Environment, EnvironmentMismatch, Series
from dtf.analysis.units import Direction, metric_direction
from dtf.errors import InvalidRequest, NotFound
from dtf.results import queries
from dtf.results.queries import Filters

if TYPE_CHECKING:
    from dtf.analysis.anomalies import AnomalyReport
    from dtf.analysis.trends import Trend

Machines = Mapping[str, tuple[str, int | None]]
UNKNOWN_MACHINE: tuple[str, int | None] = ("", None)
SERIES_LABELS = ("model", "hardware_class", "device_model", "batch_size", "precision", "config")
ENVIRONMENT_KEY = ("hardware_class", "device_model", "batch_size", "precision", "config")
# What a run comparison matches on: the same metric of the same benchmark configuration.
COMPARED_KEY = ("name", "unit", "model", "batch_size", "precision", "config")
MACHINE_FIELDS = ("hardware_class", "device_model", "cpu_model", "cpu_count")


class MetricComparison(Struct, frozen=True):
    """One metric of one benchmark configuration (``key``: model, batch_size, precision,
    config) measured in one environment in both runs."""

    key: dict[str, Any]
    environment: dict[str, str]
    environment_fingerprint: str
    comparison: Comparison


class RefusedComparison(Struct, frozen=True):
    """A metric both runs measured, but in environments that differ (``differences``)."""

    metric: str
    key: dict[str, Any]
    differences: tuple[str, ...]
    message: str


class RunComparison(Struct, frozen=True):
    run_a: str
    run_b: str
    metrics: tuple[MetricComparison, ...]
    tests: tuple[TestComparison, ...]
    refused: tuple[RefusedComparison, ...]
    only_in_a: tuple[str, ...]  # metric names that only run A measured
    only_in_b: tuple[str, ...]


class AnomalyGroup(Struct, frozen=True):
    """``subject`` is ``task durations``, ``metric series`` or ``workers``; ``key`` says
    which durations or which series."""

    subject: str
    key: dict[str, Any]
    report: AnomalyReport


class AnomalyFindings(Struct, frozen=True):
    """Every group with an anomaly, then the workers' report (whatever it found)."""

    groups_checked: int
    groups: tuple[AnomalyGroup, ...]


class SeriesTrend(Struct, frozen=True):
    key: dict[str, Any]  # the series: name, unit, model, hardware_class, device_model, ...
    trend: Trend


def regressions(
    cursor: Any,
    filters: Filters,
    *,
    since: float | None = None,
    min_relative_change: float = 0.02,
    fdr: float = 0.05,
) -> RegressionReport:
    """Change points of every series ``filters`` select, Benjamini-Hochberg over them all.

    ``since`` (epoch s) keeps the alerts and refused environment changes dated at or
    after it; the series are analysed whole, so a change has its baseline.
    """
    found = _series(cursor, filters)
    machines = queries.worker_machines(cursor)
    family = [analysis_series(s, machines) for s in found]
    report = detect_regressions(family, min_relative_change=min_relative_change, fdr=fdr)
    if since is None:
        return report
    recorded = {(s.metric, s.labels): f.recorded_at for s, f in zip(family, found, strict=True)}
    alerts = [a for a in report.alerts if recorded[(a.metric, a.labels)][a.change_index] >= since]
    refused = [c for c in report.refused if recorded[(c.metric, c.labels)][c.index] >= since]
    return msgspec.structs.replace(
        report,
        alerts=tuple(alerts),
        groups=tuple(group_by_commit_range(alerts)),
        refused=tuple(refused),
    )


def compare_runs(cursor: Any, run_a: str, run_b: str, *, seed: int = 0) -> RunComparison:
    """Run A (baseline) against run B (``run_id`` labels): every metric both measured in
    one environment, from the raw samples, and every test either ran."""
    for run in (run_a, run_b):
        if not queries.run_exists(cursor, run):
            raise NotFound(f"no attempts with run_id {run!r} in the results file", field="run")
    machines = queries.worker_machines(cursor)
    samples_a = _samples_by_environment(queries.run_samples(cursor, run_a), machines)
    samples_b = _samples_by_environment(queries.run_samples(cursor, run_b), machines)
    metrics: list[MetricComparison] = []
    refused: list[RefusedComparison] = []
    for key in sorted(samples_a.keys() & samples_b.keys(), key=str):
        compared, refusal = _compare_metric(key, samples_a[key], samples_b[key], seed)
        metrics.extend(compared)
        refused.extend(refusal)
    tests = compare_tests(
        queries.run_test_outcomes(cursor, run_a), queries.run_test_outcomes(cursor, run_b)
    )
    if not (metrics or tests):
        raise _nothing_compared(run_a, run_b, refused)
    return RunComparison(
        run_a=run_a,
        run_b=run_b,
        metrics=tuple(metrics),
        tests=tuple(tests),
        refused=tuple(refused),
        only_in_a=_names(samples_a.keys() - samples_b.keys()),
        only_in_b=_names(samples_b.keys() - samples_a.keys()),
    )


def flaky_tests(cursor: Any, *, since: float | None = None) -> list[FlakyTest]:
    """Tests that passed and failed on one revision and hardware class, every attempt counted."""
    rows = queries.recorded_tests(cursor, since)
    return find_flaky_tests(msgspec.convert(row, TestAttempt) for row in rows)


def anomalies(cursor: Any, *, since: float | None = None, seed: int = 0) -> AnomalyFindings:
    """Robust z over each task's durations and each metric series; an isolation forest over
    the workers (median duration, failure rate, attempts)."""
    from dtf.analysis.anomalies import isolation_forest_anomalies, robust_z_anomalies

    groups: list[AnomalyGroup] = []
    for row in queries.attempt_durations(cursor, since):
        report = robust_z_anomalies(
            np.asarray(row["durations"], dtype=np.float64), name="duration_s", labels=row["labels"]
        )
        key = {name: row[name] for name in ("model", "hardware_class", "params")}
        groups.append(AnomalyGroup("task durations", key, report))
    for found in queries.series(cursor, Filters(since=since)):
        report = robust_z_anomalies(
            found.values, name=str(found.key["name"]), labels=_order_keys(found)
        )
        groups.append(AnomalyGroup("metric series", found.key, report))
    workers = queries.worker_activity(cursor, since)
    features = ("median_duration_s", "failure_rate", "attempts")
    matrix = np.array([[row[f] for f in features] for row in workers], dtype=np.float64)
    worker_report = isolation_forest_anomalies(
        matrix.reshape(-1, len(features)),
        feature_names=features,
        labels=[row["worker_id"] for row in workers],
        seed=seed,
    )
    flagged = [group for group in groups if group.report.anomalies]
    return AnomalyFindings(
        groups_checked=len(groups) + 1,
        groups=(*flagged, AnomalyGroup("workers", {}, worker_report)),
    )


def trends(cursor: Any, filters: Filters, *, steps: int = 5) -> list[SeriesTrend]:
    """Per series, the Theil-Sen slope with its interval and a forecast ``steps`` ahead."""
    from dtf.analysis.trends import trend

    return [
        SeriesTrend(
            key=found.key,
            trend=trend(
                found.values,
                direction=Direction(found.direction),
                metric=str(found.key["name"]),
                unit=str(found.key["unit"] or ""),
                steps=steps,
            ),
        )
        for found in _series(cursor, filters)
    ]


def stored_alerts(cursor: Any, *, since: float | None = None) -> list[dict[str, Any]]:
    """The online check's alerts, each in its newest state (first seen at or after ``since``)."""
    return queries.latest_alerts(cursor, since)


def analysis_series(found: queries.Series, machines: Machines) -> Series:
    """A stored series as ``dtf.analysis`` takes it, one environment per point."""
    environments: dict[str | None, Environment] = {}
    for worker_id in set(found.worker_ids):
        machine = machines.get(worker_id, UNKNOWN_MACHINE) if worker_id else UNKNOWN_MACHINE
        environments[worker_id] = environment_of(found.key, machine)
    return Series.of(
        str(found.key["name"]),
        found.values,
        order_keys=_order_keys(found),
        environment=[environments[worker_id] for worker_id in found.worker_ids],
        labels=series_labels(found.key),
        direction=Direction(found.direction),
        unit=str(found.key["unit"] or ""),
    )


def series_labels(key: Mapping[str, Any]) -> dict[str, str]:
    """What identifies a series besides its metric, as the text ``Alert.labels`` carry."""
    return {name: "" if key[name] is None else str(key[name]) for name in SERIES_LABELS}


def environment_of(key: Mapping[str, Any], machine: tuple[str, int | None]) -> Environment:
    cpu_model, cpu_count = machine
    fields: dict[str, object] = {name: key[name] for name in ENVIRONMENT_KEY}
    return Environment.of({**fields, "cpu_model": cpu_model, "cpu_count": cpu_count})


def _order_keys(found: queries.Series) -> list[str]:
    """Each point's commit or run label; unlabelled points are named by when they were recorded."""
    return [
        label or datetime.fromtimestamp(float(at), tz=UTC).isoformat(timespec="seconds")
        for label, at in zip(found.labels, found.recorded_at, strict=True)
    ]


def _series(cursor: Any, filters: Filters) -> list[queries.Series]:
    found = queries.series(cursor, filters)
    if not found and filters.metric is not None:
        raise NotFound(
            f"no samples of metric {filters.metric!r} match; `dtf results aggregate --by metric` "
            "lists the metrics there are",
            field="metric",
        )
    return found


CompareKey = tuple[Any, ...]
SamplesByEnvironment = dict[CompareKey, dict[Environment, list[float]]]


def _samples_by_environment(
    rows: Sequence[Mapping[str, Any]], machines: Machines
) -> SamplesByEnvironment:
    grouped: SamplesByEnvironment = {}
    for row in rows:
        machine = (
            machines.get(row["worker_id"], UNKNOWN_MACHINE) if row["worker_id"] else UNKNOWN_MACHINE
        )
        environment = environment_of(row, machine)
        key = tuple(row[name] for name in COMPARED_KEY)
        grouped.setdefault(key, {}).setdefault(environment, []).append(float(row["value"]))
    return grouped


def _compare_metric(
    key: CompareKey,
    samples_a: dict[Environment, list[float]],
    samples_b: dict[Environment, list[float]],
    seed: int,
) -> tuple[list[MetricComparison], list[RefusedComparison]]:
    """One comparison per environment both runs measured in; a refusal when each run has
    samples in an environment the other lacks."""
    named = dict(zip(COMPARED_KEY, key, strict=True))
    shown = {name: named[name] for name in COMPARED_KEY[2:]}
    compared = [
        MetricComparison(
            key=shown,
            environment={k: v for k, v in environment.fields if k in MACHINE_FIELDS},
            environment_fingerprint=environment.fingerprint,
            comparison=compare_samples(
                np.asarray(samples_a[environment], dtype=np.float64),
                np.asarray(samples_b[environment], dtype=np.float64),
                direction=Direction(metric_direction(named["name"])),
                metric=named["name"],
                unit=named["unit"] or "",
                seed=seed,
            ),
        )
        for environment in samples_a.keys() & samples_b.keys()
    ]
    unmatched_a = [e for e in samples_a if e not in samples_b]
    unmatched_b = [e for e in samples_b if e not in samples_a]
    if not (unmatched_a and unmatched_b):
        return compared, []
    differences = tuple(unmatched_a[0].differences(unmatched_b[0]))
    message = (
        f"{named['name']} of {named['model']}: not compared, measured in different "
        f"environments ({'; '.join(differences)}); rerun both on the same hardware"
    )
    return compared, [RefusedComparison(named["name"], shown, differences, message)]


def _nothing_compared(run_a: str, run_b: str, refused: list[RefusedComparison]) -> Exception:
    if refused:
        return EnvironmentMismatch(
            f"runs {run_a!r} and {run_b!r} measured their metrics in different environments: "
            + " | ".join(r.message for r in refused)
        )
    return InvalidRequest(
        f"runs {run_a!r} and {run_b!r} share no metric and no test, so there is nothing to "
        "compare; pick runs of the same benchmarks or tests",
        field="run",
    )


def _names(keys: set[CompareKey]) -> tuple[str, ...]:
    return tuple(sorted({str(key[0]) for key in keys}))
