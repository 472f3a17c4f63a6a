"""Flaky tests: which tests both pass and fail on the same code, how often, and where.

Every attempt counts, reruns included. Attempts are grouped by (hardware class,
revision), the revision being the commit, else the run label: one group ran the
same code on the same kind of hardware.

- A test is flaky when some group holds both a pass and a failure.
- Its flake rate counts failures among the attempts of groups that passed at
  least once: that code can pass there, so each of those failures was a flake.
  Groups that only failed are left out, since a real break and a run of flakes
  look the same there.
- The estimate is the Beta posterior of that rate under Jeffreys' prior
  Beta(1/2, 1/2): its mean, and an equal-tailed credible interval.
- The same per hardware class. "Only on X" when X is flaky and its interval lies
  wholly above the interval of every other class with attempts to count.
- The flip rate is the share of consecutive attempts within a group (by time)
  whose outcomes differ.

Skipped attempts are not counted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import pairwise

import msgspec
from msgspec import Struct
from scipy import stats

from dtf.analysis.compare import FAILING_OUTCOMES, IGNORED_OUTCOMES, PASSING_OUTCOMES
from dtf.errors import InvalidRequest

PRIOR = 0.5
MESSAGE_CHARS = 160

GroupKey = tuple[str, str]


class TestAttempt(Struct, frozen=True):
    """One attempt of one test: ``revision`` is the commit, else the run label;
    ``recorded_at`` is in epoch seconds; ``message`` is the failure message."""

    __test__ = False

    node_id: str
    outcome: str
    revision: str
    hardware_class: str
    recorded_at: float
    message: str = ""


class FlakeEstimate(Struct, frozen=True):
    """``trials`` are the attempts in groups that passed at least once and
    ``flakes`` the failures among them; ``flake_rate`` is the posterior mean."""

    attempts: int
    failures: int
    revisions: int
    flaky_revisions: int
    trials: int
    flakes: int
    flake_rate: float
    interval: tuple[float, float]


class FlakyTest(Struct, frozen=True):
    node_id: str
    overall: FlakeEstimate
    flip_rate: float
    hardware: dict[str, FlakeEstimate]
    only_on: tuple[str, ...]
    credibility: float
    last_failure_message: str
    last_failure_at: float
    last_failure_hardware: str
    last_failure_revision: str
    summary: str


def flaky_tests(attempts: Iterable[TestAttempt], *, credibility: float = 0.95) -> list[FlakyTest]:
    """The flaky tests among ``attempts``, the highest flake rate first."""
    by_test: dict[str, list[TestAttempt]] = defaultdict(list)
    for attempt in attempts:
        if not _is_ignored(attempt):
            by_test[attempt.node_id].append(attempt)
    found = [_flaky_test(node_id, tests, credibility) for node_id, tests in by_test.items()]
    flaky = [test for test in found if test is not None]
    return sorted(flaky, key=lambda test: (-test.overall.flake_rate, test.node_id))


def flake_estimate(
    groups: Mapping[GroupKey, Sequence[TestAttempt]], credibility: float
) -> FlakeEstimate:
    """The flake rate over groups of one test's pass and fail attempts."""
    passing = {key: [a for a in group if _is_pass(a)] for key, group in groups.items()}
    can_pass = [group for key, group in groups.items() if passing[key]]
    trials = sum(len(group) for group in can_pass)
    flakes = sum(not _is_pass(a) for group in can_pass for a in group)
    posterior = stats.beta(PRIOR + flakes, PRIOR + trials - flakes)
    tail = (1.0 - credibility) / 2.0
    return FlakeEstimate(
        attempts=sum(len(group) for group in groups.values()),
        failures=sum(not _is_pass(a) for group in groups.values() for a in group),
        revisions=len({revision for _, revision in groups}),
        flaky_revisions=len({key[1] for key, group in groups.items() if _is_mixed(group)}),
        trials=trials,
        flakes=flakes,
        flake_rate=float(posterior.mean()),
        interval=(float(posterior.ppf(tail)), float(posterior.ppf(1.0 - tail))),
    )


def _flaky_test(node_id: str, attempts: list[TestAttempt], credibility: float) -> FlakyTest | None:
    groups = _groups(attempts)
    if not any(_is_mixed(group) for group in groups.values()):
        return None
    hardware = {
        hardware_class: flake_estimate(
            {key: group for key, group in groups.items() if key[0] == hardware_class},
            credibility,
        )
        for hardware_class in sorted({hardware_class for hardware_class, _ in groups})
    }
    last_failure = max((a for a in attempts if not _is_pass(a)), key=lambda a: a.recorded_at)
    flaky = FlakyTest(
        node_id=node_id,
        overall=flake_estimate(groups, credibility),
        flip_rate=_flip_rate(groups.values()),
        hardware=hardware,
        only_on=_only_on(hardware),
        credibility=credibility,
        last_failure_message=last_failure.message,
        last_failure_at=last_failure.recorded_at,
        last_failure_hardware=last_failure.hardware_class,
        last_failure_revision=last_failure.revision,
        summary="",
    )
    return _with_summary(flaky)


def _groups(attempts: list[TestAttempt]) -> dict[GroupKey, list[TestAttempt]]:
    groups: dict[GroupKey, list[TestAttempt]] = defaultdict(list)
    for attempt in sorted(attempts, key=lambda a: a.recorded_at):
        groups[(attempt.hardware_class, attempt.revision)].append(attempt)
    return dict(groups)


def _flip_rate(groups: Iterable[list[TestAttempt]]) -> float:
    pairs = flips = 0
    for group in groups:
        outcomes = [_is_pass(a) for a in group]
        pairs += len(outcomes) - 1
        flips += sum(before != after for before, after in pairwise(outcomes))
    return flips / pairs if pairs else 0.0


def _only_on(hardware: Mapping[str, FlakeEstimate]) -> tuple[str, ...]:
    counted = {name: estimate for name, estimate in hardware.items() if estimate.trials}
    if len(counted) < 2:
        return ()
    return tuple(
        name
        for name, estimate in counted.items()
        if estimate.flaky_revisions
        and all(
            other.interval[1] < estimate.interval[0]
            for other_name, other in counted.items()
            if other_name != name
        )
    )


def _with_summary(flaky: FlakyTest) -> FlakyTest:
    overall = flaky.overall
    low, high = overall.interval
    parts = [
        f"{flaky.node_id}: flaky on {overall.flaky_revisions} of {overall.revisions} revisions",
        f"flake rate {100 * overall.flake_rate:.0f} % ({100 * flaky.credibility:g} % CI "
        f"{100 * low:.0f} %..{100 * high:.0f} %)",
        f"flip rate {flaky.flip_rate:.2f}",
    ]
    if flaky.only_on:
        parts.append(f"only on {', '.join(flaky.only_on)}")
    when = datetime.fromtimestamp(flaky.last_failure_at, tz=UTC).isoformat(timespec="seconds")
    message = (
        flaky.last_failure_message.strip().splitlines()[0] if flaky.last_failure_message else ""
    )
    last = f"last failure on {flaky.last_failure_hardware} at {when}"
    parts.append(f"{last}: {message[:MESSAGE_CHARS]}" if message else last)
    return msgspec.structs.replace(flaky, summary="; ".join(parts))


def _is_mixed(group: Sequence[TestAttempt]) -> bool:
    passes = sum(_is_pass(a) for a in group)
    return 0 < passes < len(group)


def _is_pass(attempt: TestAttempt) -> bool:
    return attempt.outcome in PASSING_OUTCOMES


def _is_ignored(attempt: TestAttempt) -> bool:
    if attempt.outcome in IGNORED_OUTCOMES:
        return True
    if attempt.outcome not in PASSING_OUTCOMES | FAILING_OUTCOMES:
        raise InvalidRequest(
            f"test {attempt.node_id!r} has outcome {attempt.outcome!r}; expected one of "
            f"{sorted(PASSING_OUTCOMES | FAILING_OUTCOMES | IGNORED_OUTCOMES)}"
        )
    return False
