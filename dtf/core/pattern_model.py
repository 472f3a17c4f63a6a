"""A learned probability for the rule patterns of ``dtf.core.patterns``.

How this works: for every candidate subject in a window of failures and
successes -- each worker and each hardware class seen, each task that
failed -- ``subject_features`` computes counts and rates, and each of them
again relative to the median over that kind's subjects (so a worker is
judged against its fleet). Per kind, a logistic regression turns a row into
the probability that the subject really is at fault:
``sigmoid(intercept + sum(coefficient * (value - mean) / scale))``. The
means, scales and coefficients are data in ``dtf.core.pattern_weights``,
trained offline on labelled synthetic histories by
``bench/patterns.py --export`` (scikit-learn, fixed seeds); nothing here
trains. Failure-type and burst patterns name no subject a label can name,
so they have no model. ``scored_and_ranked`` puts the probability on the
rule patterns and orders them by it.

The weights are a generated Python module rather than a data file: it is
imported like any module (no package-data to ship, nothing to open at run
time), mypy checks its types, and a diff of it reads as numbers.

The model knows only the synthetic fleet it was trained on: 24 workers,
three hardware classes, bad workers failing 70 % and a bad class 35 % of
their attempts, poison tasks that crash their workers. Problems much
milder than that score low, which is why the probability orders the rule
patterns (and filters them only when asked) but never replaces them.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from dtf.core import pattern_weights
from dtf.core.breakers import HARDWARE_FAULTS, WORKER_FAULTS
from dtf.core.failures import FailureType

if TYPE_CHECKING:
    # Only for annotations: dtf.core.patterns imports this module.
    from dtf.core.pattern_records import FailureRecord, SuccessRecord
    from dtf.core.patterns import FailurePattern

WORKER = "worker"
HARDWARE = "hardware"
TASK = "task"

# The raw features per kind, in the order of a row; ``*_vs_median`` follow.
RAW_FEATURES = {
    WORKER: (
        "failures",
        "tasks",
        "tasks_failed_only_here",
        "tasks_succeeded_elsewhere",
        "worker_faults",
        "failure_rate",
    ),
    HARDWARE: ("hardware_faults", "workers", "busiest_worker_share", "fault_rate"),
    TASK: ("failures", "workers", "worker_crashes", "failure_types", "succeeded"),
}

Rows = dict[str, list[float]]


def feature_names(kind: str) -> tuple[str, ...]:
    raw = RAW_FEATURES[kind]
    return (*raw, *(f"{name}_vs_median" for name in raw))


@dataclass(frozen=True)
class LinearModel:
    """A standardised logistic regression over one kind's feature rows."""

    features: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float

    def probability(self, row: Sequence[float]) -> float:
        terms = zip(row, self.means, self.scales, self.coefficients, strict=True)
        return sigmoid(self.intercept + sum(c * (x - m) / s for x, m, s, c in terms))


def sigmoid(z: float) -> float:
    """1 / (1 + e^-z), without overflowing for large negative ``z``."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    exp_z = math.exp(z)
    return exp_z / (1.0 + exp_z)


def trained_models() -> dict[str, LinearModel]:
    """The committed models, one per kind the weights cover."""
    return {
        kind: LinearModel(
            features=pattern_weights.FEATURES[kind],
            means=pattern_weights.MEANS[kind],
            scales=pattern_weights.SCALES[kind],
            coefficients=pattern_weights.COEFFICIENTS[kind],
            intercept=pattern_weights.INTERCEPTS[kind],
        )
        for kind in pattern_weights.FEATURES
    }


MODELS = trained_models()


def learned_probabilities(
    failures: Sequence[FailureRecord],
    successes: Sequence[SuccessRecord],
    models: dict[str, LinearModel] | None = None,
) -> dict[tuple[str, str], float]:
    """(kind, subject) -> probability that the subject is at fault, for every
    candidate subject of the kinds with a model."""
    chosen = MODELS if models is None else models
    return {
        (kind, subject): chosen[kind].probability(row)
        for kind, rows in subject_features(failures, successes).items()
        if kind in chosen
        for subject, row in rows.items()
    }


def scored_and_ranked(
    patterns: Iterable[FailurePattern],
    failures: Sequence[FailureRecord],
    successes: Sequence[SuccessRecord],
    *,
    min_probability: float = 0.0,
) -> list[FailurePattern]:
    """Each pattern with its ``learned_probability`` where its kind has a
    model, leaving out those below ``min_probability`` (never one without a
    model); ranked by learned probability, else by confidence, then by
    confidence, kind and key."""
    probabilities = learned_probabilities(failures, successes)
    scored = [_with_probability(p, probabilities) for p in patterns]
    kept = [
        p
        for p in scored
        if p.learned_probability is None or p.learned_probability >= min_probability
    ]
    return sorted(kept, key=_rank)


def _with_probability(
    pattern: FailurePattern, probabilities: dict[tuple[str, str], float]
) -> FailurePattern:
    probability = probabilities.get((pattern.kind.value, pattern.key))
    if probability is None:
        return pattern
    return msgspec.structs.replace(pattern, learned_probability=round(probability, 3))


def _rank(pattern: FailurePattern) -> tuple[float, float, str, str]:
    score = pattern.learned_probability
    if score is None:
        score = pattern.confidence
    return (-score, -pattern.confidence, pattern.kind.value, pattern.key)


def subject_features(
    failures: Sequence[FailureRecord], successes: Sequence[SuccessRecord]
) -> dict[str, Rows]:
    """Per kind, per candidate subject: the row ``feature_names(kind)`` names."""
    raw = {
        WORKER: _worker_rows(failures, successes),
        HARDWARE: _hardware_rows(failures, successes),
        TASK: _task_rows(failures, successes),
    }
    return {kind: with_relative(rows) for kind, rows in raw.items()}


def _worker_rows(failures: Sequence[FailureRecord], successes: Sequence[SuccessRecord]) -> Rows:
    failed_on = _index((f.task_id, f.worker_id) for f in failures)
    succeeded_on = _index((s.task_id, s.worker_id) for s in successes)
    attempts = Counter([*(f.worker_id for f in failures), *(s.worker_id for s in successes)])
    by_worker = _grouped((f.worker_id, f) for f in failures)
    rows: Rows = {}
    for worker_id in sorted(attempts):
        mine = by_worker.get(worker_id, [])
        tasks = {f.task_id for f in mine}
        alone = [t for t in tasks if failed_on[t] == {worker_id}]
        elsewhere = [t for t in tasks if succeeded_on.get(t, set()) - {worker_id}]
        faults = sum(1 for f in mine if f.failure_type in WORKER_FAULTS)
        rate = len(mine) / attempts[worker_id]
        rows[worker_id] = [len(mine), len(tasks), len(alone), len(elsewhere), faults, rate]
    return rows


def _hardware_rows(failures: Sequence[FailureRecord], successes: Sequence[SuccessRecord]) -> Rows:
    attempts = Counter(
        [*(f.hardware_class for f in failures), *(s.hardware_class for s in successes)]
    )
    faults = _grouped((f.hardware_class, f) for f in failures if f.failure_type in HARDWARE_FAULTS)
    rows: Rows = {}
    for hardware in sorted(attempts):
        mine = faults.get(hardware, [])
        per_worker = Counter(f.worker_id for f in mine)
        busiest = max(per_worker.values(), default=0)
        share = busiest / max(len(mine), 1)
        rows[hardware] = [len(mine), len(per_worker), share, len(mine) / attempts[hardware]]
    return rows


def _task_rows(failures: Sequence[FailureRecord], successes: Sequence[SuccessRecord]) -> Rows:
    succeeded = {s.task_id for s in successes}
    rows: Rows = {}
    for task_id, failed in sorted(_grouped((f.task_id, f) for f in failures).items()):
        workers = {f.worker_id for f in failed}
        crashes = sum(1 for f in failed if f.failure_type is FailureType.WORKER_CRASH)
        types = len({f.failure_type for f in failed})
        rows[task_id] = [len(failed), len(workers), crashes, types, float(task_id in succeeded)]
    return rows


def with_relative(rows: Rows) -> Rows:
    """Each row followed by its values minus the median of each column."""
    if not rows:
        return rows
    columns = list(zip(*rows.values(), strict=True))
    medians = [statistics.median(column) for column in columns]
    return {
        key: [*values, *(v - m for v, m in zip(values, medians, strict=True))]
        for key, values in rows.items()
    }


def _index(pairs: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    index: dict[str, set[str]] = {}
    for key, value in pairs:
        index.setdefault(key, set()).add(value)
    return index


def _grouped(pairs: Iterable[tuple[str, FailureRecord]]) -> dict[str, list[FailureRecord]]:
    groups: dict[str, list[FailureRecord]] = {}
    for key, failure in pairs:
        groups.setdefault(key, []).append(failure)
    return groups
