"""Anomalies in worker and task metrics: one metric at a time, or several together.

``robust_z_anomalies`` scores each value by the modified z-score of Iglewicz and
Hoaglin, ``0.6745 * (x - median) / MAD``, and flags ``|z| > threshold`` (3.5 by
their advice). Median and MAD ignore the outliers they are looking for, unlike
mean and standard deviation. When more than half the values are equal the MAD
is 0; the mean absolute deviation (times 1.2533, which makes it estimate the same
spread for normal data) stands in. When that is 0 too, every value is equal and
nothing is anomalous.

``isolation_forest_anomalies`` takes one row per point and one column per metric
(say a worker snapshot's CPU, memory, GPU temperature) and scores each row by
how quickly random splits isolate it (Liu, Ting and Zhou): about 0.5 for ordinary
points, towards 1 for anomalies. The score is a ranking more than a calibrated
probability: with Gaussian data, 0.65 flags a few edge points in a thousand in two
dimensions and fewer in more; with many features a point extreme in only one of
them scores lower. Each anomaly also carries every feature's robust z-score, so
the report can say which metrics stand out.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np
from msgspec import Struct
from sklearn.ensemble import IsolationForest

from dtf.analysis.series import FloatArray
from dtf.errors import InvalidRequest

MAD_SCALE = 0.6745
MEAN_AD_SCALE = 1.2533
MIN_POINTS_ROBUST_Z = 3
MIN_POINTS_ISOLATION_FOREST = 8
ISOLATION_TREES = 200
FEATURES_IN_SUMMARY = 3


class AnomalyMethod(enum.StrEnum):
    ROBUST_Z = "robust_z"
    ISOLATION_FOREST = "isolation_forest"


class Anomaly(Struct, frozen=True):
    """One anomalous point: ``index`` into the input, its label, its score (the
    robust z-score, or the isolation-forest score), its values and each value's
    robust z-score by feature name."""

    method: AnomalyMethod
    index: int
    label: str
    score: float
    values: dict[str, float]
    deviations: dict[str, float]
    summary: str


class AnomalyReport(Struct, frozen=True):
    method: AnomalyMethod
    features: tuple[str, ...]
    points: int
    threshold: float
    anomalies: tuple[Anomaly, ...]
    summary: str


def robust_z_scores(values: FloatArray) -> FloatArray:
    """The modified z-score of every value; all zeros when every value is equal."""
    center = float(np.median(values))
    deviation = values - center
    mad = float(np.median(np.abs(deviation)))
    if mad > 0:
        return np.asarray(MAD_SCALE * deviation / mad, dtype=np.float64)
    mean_ad = float(np.mean(np.abs(deviation)))
    if mean_ad > 0:
        return np.asarray(deviation / (MEAN_AD_SCALE * mean_ad), dtype=np.float64)
    return np.zeros_like(values)


def robust_z_anomalies(
    values: FloatArray,
    *,
    name: str = "value",
    labels: Sequence[str] | None = None,
    threshold: float = 3.5,
) -> AnomalyReport:
    """Values of one metric whose ``|robust z| > threshold``, largest first."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise InvalidRequest(
            f"{name} values have shape {array.shape}; expected one value per point"
        )
    column = _checked_matrix(array.reshape(-1, 1), (name,))[:, 0]
    labels = _checked_labels(labels, len(column))
    method, features = AnomalyMethod.ROBUST_Z, (name,)
    if len(column) < MIN_POINTS_ROBUST_Z:
        return _too_few(method, features, len(column), threshold, MIN_POINTS_ROBUST_Z)
    scores = robust_z_scores(column)
    flagged = np.flatnonzero(np.abs(scores) > threshold)
    anomalies = [
        _anomaly(method, int(i), labels[i], float(scores[i]), column[[i]], scores[[i]], features)
        for i in flagged[np.argsort(-np.abs(scores[flagged]), kind="stable")]
    ]
    condition = f"|robust z| > {threshold:g}, median {np.median(column):.4g}"
    return _report(method, features, len(column), threshold, anomalies, condition)


def isolation_forest_anomalies(
    features: FloatArray,
    *,
    feature_names: Sequence[str],
    labels: Sequence[str] | None = None,
    min_score: float = 0.65,
    seed: int | np.random.Generator = 0,
) -> AnomalyReport:
    """Rows (points) of ``features`` whose isolation-forest score is at least
    ``min_score``, highest first."""
    names = tuple(feature_names)
    matrix = _checked_matrix(np.asarray(features, dtype=np.float64), names)
    labels = _checked_labels(labels, len(matrix))
    method = AnomalyMethod.ISOLATION_FOREST
    if len(matrix) < MIN_POINTS_ISOLATION_FOREST:
        return _too_few(method, names, len(matrix), min_score, MIN_POINTS_ISOLATION_FOREST)
    scores = _isolation_scores(matrix, seed)
    deviations = np.column_stack([robust_z_scores(matrix[:, j]) for j in range(len(names))])
    flagged = np.flatnonzero(scores >= min_score)
    anomalies = [
        _anomaly(method, int(i), labels[i], float(scores[i]), matrix[i], deviations[i], names)
        for i in flagged[np.argsort(-scores[flagged], kind="stable")]
    ]
    condition = f"isolation-forest score >= {min_score:g}"
    return _report(method, names, len(matrix), min_score, anomalies, condition)


def _isolation_scores(matrix: FloatArray, seed: int | np.random.Generator) -> FloatArray:
    random_state = seed if isinstance(seed, int) else int(seed.integers(2**31 - 1))
    forest = IsolationForest(n_estimators=ISOLATION_TREES, random_state=random_state)
    # score_samples is the negated score of the paper; flip it back to (0, 1].
    return np.asarray(-forest.fit(matrix).score_samples(matrix), dtype=np.float64)


def _anomaly(
    method: AnomalyMethod,
    index: int,
    label: str,
    score: float,
    values: FloatArray,
    deviations: FloatArray,
    names: tuple[str, ...],
) -> Anomaly:
    by_deviation = sorted(range(len(names)), key=lambda j: -abs(float(deviations[j])))
    shown = ", ".join(
        f"{names[j]}={values[j]:.4g} (z={deviations[j]:+.1f})"
        for j in by_deviation[:FEATURES_IN_SUMMARY]
    )
    summary = f"{label}: {shown}"
    if method is AnomalyMethod.ISOLATION_FOREST:
        summary = f"{label}: isolation-forest score {score:.2f}; {shown}"
    return Anomaly(
        method=method,
        index=index,
        label=label,
        score=score,
        values={name: float(v) for name, v in zip(names, values, strict=True)},
        deviations={name: float(z) for name, z in zip(names, deviations, strict=True)},
        summary=summary,
    )


def _report(
    method: AnomalyMethod,
    features: tuple[str, ...],
    points: int,
    threshold: float,
    anomalies: list[Anomaly],
    condition: str,
) -> AnomalyReport:
    summary = (
        f"{len(anomalies)} of {points} points anomalous in {', '.join(features)} ({condition})"
    )
    return AnomalyReport(method, features, points, threshold, tuple(anomalies), summary)


def _too_few(
    method: AnomalyMethod, features: tuple[str, ...], points: int, threshold: float, needed: int
) -> AnomalyReport:
    summary = (
        f"{', '.join(features)}: {points} points are too few for {method}; "
        f"it needs at least {needed}"
    )
    return AnomalyReport(method, features, points, threshold, (), summary)


def _checked_matrix(matrix: FloatArray, names: tuple[str, ...]) -> FloatArray:
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise InvalidRequest(
            f"features have shape {matrix.shape}; expected one row per point and "
            f"{len(names)} columns, one per name in {list(names)}"
        )
    bad_columns = [names[j] for j in range(len(names)) if not np.all(np.isfinite(matrix[:, j]))]
    if bad_columns:
        raise InvalidRequest(
            f"non-finite values in {bad_columns}; drop or fill those points before looking "
            "for anomalies"
        )
    return matrix


def _checked_labels(labels: Sequence[str] | None, points: int) -> Sequence[str]:
    if labels is None:
        return [str(i) for i in range(points)]
    if len(labels) != points:
        raise InvalidRequest(f"{len(labels)} labels for {points} points; give one label per point")
    return labels
