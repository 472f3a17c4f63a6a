"""Accuracy and speed of dtf's regression detector (dtf.analysis) on synthetic series.

Series are a level of 100 with Gaussian noise (1, 3, 5 % of the level), some
with a step up of 3, 5 or 10 % (a latency getting worse), some with outlier
spikes (3 % of points multiplied by 1.5 to 3). Prints figures; asserts nothing.

    .venv/bin/python bench/analysis.py [--per-config 40] [--series 2000] [--points 500]
                                       [--full] [--seed 0] [--json]

Online (at ingest): families of series get one new point per round, as an ingest
of one run would give them; ``online_checks`` runs over the family with each
series' open step, as ``dtf.results.alerts`` runs it, and repeats are merged. A
detection is true when it dates the step within 5 points of where it was
injected, after the step; delay is the number of post-step results seen. A step
missed within 20 was either unseen by then or seen but dated more than 5 points
off; false alerts are counted on stationary series, on stepped series before
their step, and as detections of a step dated more than 5 points off.

Retrospective: ``detect_regressions`` over a family of 200-point series, some
with a step at a random position; true when dated within 3 points.

Speed: ``detect_regressions`` over --series series of --points points (5 % with a
step); --full is the 10,000 x 500 figure.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from dtf.analysis.online import Detection, merge_detections, online_checks, series_id
from dtf.analysis.regressions import detect_regressions
from dtf.analysis.series import Series

LEVEL = 100.0
NOISES = (0.01, 0.03, 0.05)
STEPS = (0.03, 0.05, 0.10)
HISTORY = 150  # points before the step in the online experiment
AFTER = 30  # points after it
FIRST_CHECK = 100  # the online check runs from this series length on
STATIONARY_PER_STEP = 3  # online families: three stationary series for each stepped one
ONLINE_TOLERANCE = 5
RETRO_LENGTH = 200
RETRO_TOLERANCE = 3
SPIKE_RATE = 0.03
console = Console()


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-config", type=int, default=40, help="stepped series per config")
    parser.add_argument("--series", type=int, default=2000, help="series in the speed figure")
    parser.add_argument("--points", type=int, default=500, help="points per series (speed)")
    parser.add_argument("--full", action="store_true", help="speed over 10,000 series")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    options = parser.parse_args()
    if options.full:
        options.series = 10_000
    return options


def synthetic(
    rng: np.random.Generator, count: int, length: int, noise: float, spiky: bool
) -> np.ndarray:
    values = LEVEL * (1.0 + noise * rng.standard_normal((count, length)))
    if spiky:
        spikes = rng.random((count, length)) < SPIKE_RATE
        values[spikes] *= rng.uniform(1.5, 3.0, int(spikes.sum()))
    return values


def series_of(row: np.ndarray, name: int) -> Series:
    return Series.of("latency_ms", row, labels={"series": name})


def online_accuracy(
    rng: np.random.Generator, noise: float, step: float, spiky: bool, count: int
) -> dict[str, float]:
    stepped = synthetic(rng, count, HISTORY + AFTER, noise, spiky)
    stepped[:, HISTORY:] += LEVEL * step
    flat = synthetic(rng, STATIONARY_PER_STEP * count, HISTORY + AFTER, noise, spiky)
    values = np.vstack([stepped, flat])
    merged: list[list[Detection]] = [[] for _ in values]
    for length in range(FIRST_CHECK, HISTORY + AFTER + 1):
        family = [series_of(row[:length], name) for name, row in enumerate(values)]
        opened = {series_id(family[name]): seen[-1] for name, seen in enumerate(merged) if seen}
        for found in online_checks(family, opened=opened):
            name = int(dict(found.labels)["series"])
            merged[name] = merge_detections([*merged[name], found])
    return online_figures(merged, count, HISTORY + AFTER - FIRST_CHECK + 1)


def online_figures(merged: list[list[Detection]], count: int, rounds: int) -> dict[str, float]:
    delays, true_alerts, false_on_flat = [], 0, 0
    misses = {"unseen": 0, "dated_off": 0}
    false_on_stepped = {"before_step": 0, "dated_off": 0}
    for index, detections in enumerate(merged):
        if index >= count:
            false_on_flat += len(detections)
            continue
        hits = [d for d in detections if is_on_step(d, ONLINE_TOLERANCE)]
        true_alerts += len(hits)
        false_on_stepped["before_step"] += sum(d.checked_index < HISTORY for d in detections)
        false_on_stepped["dated_off"] += sum(
            d.checked_index >= HISTORY and d not in hits for d in detections
        )
        if hits:
            delays.append(hits[0].checked_index - HISTORY + 1)
        if not hits or delays[-1] > 20:
            misses["dated_off" if any(map(seen_within_20, detections)) else "unseen"] += 1
    found = np.array(delays)
    false_alerts = false_on_flat + sum(false_on_stepped.values())
    return {
        "recall_within_10": float(np.sum(found <= 10) / count),
        "recall_within_20": float(np.sum(found <= 20) / count),
        "missed_20_unseen": misses["unseen"] / count,
        "missed_20_dated_off": misses["dated_off"] / count,
        "median_delay": float(np.median(found)) if found.size else float("nan"),
        "precision": true_alerts / max(true_alerts + false_alerts, 1),
        "true_alerts": true_alerts,
        "alerts": true_alerts + false_alerts,
        "false_on_stationary": false_on_flat,
        "false_before_step": false_on_stepped["before_step"],
        "false_dated_off": false_on_stepped["dated_off"],
        "false_per_1000_stationary_checks": 1000.0
        * false_on_flat
        / (STATIONARY_PER_STEP * count * rounds),
    }


def seen_within_20(found: Detection) -> bool:
    """Whether a detection saw the step (was seen after it) within 20 results of it."""
    return found.seen_until_index >= HISTORY and found.checked_index < HISTORY + 20


def is_on_step(found: Detection, tolerance: int) -> bool:
    return found.checked_index >= HISTORY and abs(found.change_index - HISTORY) <= tolerance


def retrospective_accuracy(
    rng: np.random.Generator, noise: float, step: float, spiky: bool, count: int
) -> dict[str, float]:
    values = synthetic(rng, STATIONARY_PER_STEP * count + count, RETRO_LENGTH, noise, spiky)
    where = rng.integers(40, RETRO_LENGTH - 40, count)
    for row, start in zip(values[:count], where, strict=True):
        row[start:] += LEVEL * step
    report = detect_regressions([series_of(row, name) for name, row in enumerate(values)])
    true_alerts, dating_errors = 0, []
    for alert in report.alerts:
        name = int(dict(alert.labels)["series"])
        if name < count and abs(alert.change_index - where[name]) <= RETRO_TOLERANCE:
            true_alerts += 1
            dating_errors.append(abs(alert.change_index - where[name]))
    return {
        "recall": true_alerts / count,
        "precision": true_alerts / max(len(report.alerts), 1),
        "mean_dating_error": float(np.mean(dating_errors)) if dating_errors else float("nan"),
    }


def stationary_false_alerts(rng: np.random.Generator, spiky: bool, families: int) -> float:
    """Alerts per 1,000 stationary series, re-analysed as families of 1,000 under BH."""
    alerts = 0
    for _ in range(families):
        values = synthetic(rng, 1000, RETRO_LENGTH, 0.03, spiky)
        alerts += len(
            detect_regressions([series_of(row, i) for i, row in enumerate(values)]).alerts
        )
    return alerts / families


def speed(rng: np.random.Generator, count: int, points: int) -> dict[str, float]:
    values = synthetic(rng, count, points, 0.03, spiky=True)
    values[: count // 20, points // 2 :] += LEVEL * 0.05
    family = [series_of(row, name) for name, row in enumerate(values)]
    started = time.perf_counter()
    report = detect_regressions(family)
    elapsed = time.perf_counter() - started
    return {
        "series": count,
        "points": points,
        "seconds": elapsed,
        "ms_per_series": 1000.0 * elapsed / count,
        "alerts": len(report.alerts),
        "tests": report.tests,
    }


def measure(options: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(options.seed)
    configs = [(n, s, spiky) for spiky in (False, True) for n in NOISES for s in STEPS]
    online, retro = [], []
    for noise, step, spiky in configs:
        console.print(f"[dim]noise {noise:.0%} step {step:.0%} spikes {spiky} ...[/dim]")
        config = {"noise": noise, "step": step, "spikes": spiky}
        online.append(config | online_accuracy(rng, noise, step, spiky, options.per_config))
        retro.append(config | retrospective_accuracy(rng, noise, step, spiky, options.per_config))
    console.print("[dim]stationary families and speed ...[/dim]")
    return {
        "online": online,
        "retrospective": retro,
        "retrospective_false_per_1000_stationary": {
            "no_spikes": stationary_false_alerts(rng, False, 3),
            "spikes": stationary_false_alerts(rng, True, 3),
        },
        "speed": speed(rng, options.series, options.points),
    }


def targets(figures: dict[str, Any]) -> list[tuple[str, float, str, bool]]:
    """The issue's accuracy and speed targets next to the figures measured."""
    online = figures["online"]

    def pick(noise: float, step: float, spikes: bool, key: str) -> float:
        return float(
            next(
                r[key]
                for r in online
                if (r["noise"], r["step"], r["spikes"]) == (noise, step, spikes)
            )
        )

    spiky = [r for r in online if r["spikes"]]
    spiky_precision = sum(r["true_alerts"] for r in spiky) / max(sum(r["alerts"] for r in spiky), 1)
    worst_flat = max(r["false_per_1000_stationary_checks"] for r in online)
    retro_flat = max(figures["retrospective_false_per_1000_stationary"].values())
    speed = figures["speed"]
    full_s = speed["ms_per_series"] * 10_000 / 1000.0 * speed["points"] / 500
    rows = [
        (
            f"recall, {step:.0%} step within {within}, 3 % noise{' + spikes' if spikes else ''}",
            pick(0.03, step, spikes, f"recall_within_{within}"),
            goal,
        )
        for step, within, goal in ((0.05, 10, 0.90), (0.03, 20, 0.80))
        for spikes in (False, True)
    ]
    return [
        *((name, value, f">= {goal:.2f}", value >= goal) for name, value, goal in rows),
        ("precision, all spiky series pooled", spiky_precision, ">= 0.90", spiky_precision >= 0.90),
        (
            "online false alerts / 1,000 stationary checks (worst)",
            worst_flat,
            "<= 1",
            worst_flat <= 1.0,
        ),
        (
            "re-analysis false alerts / 1,000 stationary series",
            retro_flat,
            "<= 1",
            retro_flat <= 1.0,
        ),
        (
            "re-analysis of 10,000 x 500, s (scaled from the speed run)",
            full_s,
            "< 60",
            full_s < 60.0,
        ),
    ]


def render(figures: dict[str, Any]) -> None:
    online = Table(title="online check at ingest (families of 1 stepped : 3 stationary)")
    for column in (
        "noise",
        "step",
        "spikes",
        "recall@10",
        "recall@20",
        "missed@20: unseen / dated off",
        "median delay",
        "precision",
        "false: stationary / before / dated off",
        "false/1000 checks",
    ):
        online.add_column(column, justify="right")
    for r in figures["online"]:
        online.add_row(
            f"{r['noise']:.0%}",
            f"{r['step']:.0%}",
            "yes" if r["spikes"] else "no",
            f"{r['recall_within_10']:.2f}",
            f"{r['recall_within_20']:.2f}",
            f"{r['missed_20_unseen']:.2f} / {r['missed_20_dated_off']:.2f}",
            f"{r['median_delay']:.0f}",
            f"{r['precision']:.2f}",
            f"{r['false_on_stationary']} / {r['false_before_step']} / {r['false_dated_off']}",
            f"{r['false_per_1000_stationary_checks']:.2f}",
        )
    console.print(online)
    retro = Table(
        title=f"re-analysis of {RETRO_LENGTH}-point series (families of 1 stepped : 3 stationary)"
    )
    for column in ("noise", "step", "spikes", "recall", "precision", "mean dating error"):
        retro.add_column(column, justify="right")
    for r in figures["retrospective"]:
        retro.add_row(
            f"{r['noise']:.0%}",
            f"{r['step']:.0%}",
            "yes" if r["spikes"] else "no",
            f"{r['recall']:.2f}",
            f"{r['precision']:.2f}",
            f"{r['mean_dating_error']:.2f}",
        )
    console.print(retro)
    speed = figures["speed"]
    console.print(
        f"re-analysis speed: {speed['series']} series x {speed['points']} points in "
        f"{speed['seconds']:.2f} s ({speed['ms_per_series']:.2f} ms per series, "
        f"{speed['tests']} tests, {speed['alerts']} alerts)"
    )
    checks = Table(title="targets")
    for column in ("target", "measured", "goal", "met"):
        checks.add_column(column)
    for name, value, goal, met in targets(figures):
        checks.add_row(name, f"{value:.3g}", goal, "yes" if met else "[red]no[/red]")
    console.print(checks)


def main() -> None:
    options = parse_options()
    figures = measure(options)
    if options.json:
        print(json.dumps(figures, indent=2))
    else:
        render(figures)


if __name__ == "__main__":
    main()
