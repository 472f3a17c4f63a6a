"""Worker health: a score from recent results and connection incidents.

How this works: every result or incident that says something about a worker
is kept as a sample with a ``good`` and a ``bad`` weight: a completed attempt
is good; a failure the worker is to blame for (a CUDA error, a crash, a lost
browser) is bad; so is a dropped connection (half) or a heartbeat silence
long enough to mark the worker offline, while it held work. A task's own failures (its assertion,
its out-of-memory at a batch size) say nothing about the worker and are not
kept. Weights halve every ``half_life_s``, so old trouble fades, and a prior
of ``PRIOR_GOOD`` good results keeps one early failure from condemning a new
worker::

    score = 100 * (PRIOR_GOOD + good) / (PRIOR_GOOD + good + bad)

Three worker faults in a row take a fresh worker to 62, under the default
``health-threshold`` of 70 (the seeds' value): it is quarantined just as its
circuit breaker opens, but where the breaker lets a probe through after a few
minutes, quarantine holds until the score has decayed back over the
threshold, a health check passes, or an admin re-enables the worker.
"""

from __future__ import annotations

import enum
from collections import Counter

from msgspec import Struct

DEFAULT_THRESHOLD = 70.0
DEFAULT_HALF_LIFE_S = 600.0
PRIOR_GOOD = 5.0
MAX_SAMPLES = 32


class HealthSample(Struct, frozen=True, array_like=True):
    at: float
    good: float
    bad: float
    what: str


class CheckState(enum.StrEnum):
    """Where a worker's health check stands; ``none`` when it has no check command."""

    NONE = "none"
    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"


class WorkerHealth(Struct):
    samples: list[HealthSample] = []
    quarantined: bool = False
    quarantine_reason: str | None = None
    quarantined_at: float | None = None
    held_by_admin: bool = False
    recheck_at: float | None = None
    check_command: str | None = None
    check: CheckState = CheckState.NONE
    check_detail: str | None = None
    checked_at: float | None = None

    @property
    def admits_work(self) -> bool:
        return not self.quarantined and self.check not in (CheckState.PENDING, CheckState.FAILED)

    def add(self, sample: HealthSample) -> None:
        self.samples = [*self.samples[-(MAX_SAMPLES - 1) :], sample]


def success(at: float) -> HealthSample:
    return HealthSample(at, 1.0, 0.0, "success")


def fault(at: float, what: str) -> HealthSample:
    return HealthSample(at, 0.0, 1.0, what)


def connection_dropped(at: float) -> HealthSample:
    return HealthSample(at, 0.0, 0.5, "connection dropped")


def went_silent(at: float) -> HealthSample:
    return HealthSample(at, 0.0, 1.0, "heartbeats stopped")


def decay(sample: HealthSample, now: float, half_life_s: float) -> float:
    age = max(0.0, now - sample.at)
    return float(0.5 ** (age / half_life_s))


def score(samples: list[HealthSample], now: float, half_life_s: float) -> float:
    """0-100; 100 for a worker with nothing against it."""
    if not any(sample.bad for sample in samples):
        return 100.0
    good = bad = 0.0
    for sample in samples:  # one decay per sample: this runs on every outcome applied
        weight = decay(sample, now, half_life_s)
        good += sample.good * weight
        bad += sample.bad * weight
    return 100.0 * ((PRIOR_GOOD + good) / (PRIOR_GOOD + good + bad))


def explain(samples: list[HealthSample], now: float, half_life_s: float) -> str:
    """What weighs on the score, e.g. '3 faults (cuda_error x2, worker_crash), 4 successes'.

    Samples whose weight has decayed below a tenth are no longer mentioned.
    """
    recent = [s for s in samples if decay(s, now, half_life_s) >= 0.1]
    faults = Counter(s.what for s in recent if s.bad > 0)
    successes = sum(1 for s in recent if s.good > 0)
    parts = []
    if faults:
        total = sum(faults.values())
        kinds = ", ".join(what if n == 1 else f"{what} x{n}" for what, n in faults.most_common())
        parts.append(f"{total} fault{'s' if total != 1 else ''} ({kinds})")
    if successes:
        parts.append(f"{successes} success{'es' if successes != 1 else ''}")
    return ", ".join(parts) if parts else "no recent results"


def describe(samples: list[HealthSample], now: float, half_life_s: float) -> str:
    """'health 62 (3 faults (cuda_error x3))' — the score with what weighs on it."""
    return f"health {score(samples, now, half_life_s):.0f} ({explain(samples, now, half_life_s)})"
