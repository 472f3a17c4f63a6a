"""Rule-based failure patterns against a learned layer, on labelled synthetic histories.

Prints precision and recall of both on held-out histories, per noise level;
asserts nothing. The issue asks for a learned layer only if it beats the
rule-based one here.

    .venv/bin/python bench/patterns.py [--train 40] [--test 40] [--tasks 300]

**History.** One seeded ``random.Random`` per history draws a fleet of 24
workers (12 cpu, 8 cuda, 4 webgpu) and 300 tasks over an hour; each task is
tried on a random worker of its class until it succeeds or has failed 4
times, a failed task moving to another worker. Planted in it, and labelled:

- 2 bad workers (``worker``, id): 70 % of their attempts fail with a fault
  of theirs (hardware error, worker crash, CUDA error);
- 1 bad hardware class, cuda or webgpu (``hardware``, class): 35 % of its
  attempts on any worker fail with a hardware fault of that class;
- 3 poison tasks (``task``, id): every attempt takes its worker down.

Not labelled, and there to mislead: 6 flaky tasks that fail half their runs
with software errors and then succeed, and background noise: each attempt
fails with probability ``noise`` (2, 5, 10, 20 %) in a random way (software
error, OOM, timeout, communication error, worker crash).

**Scoring.** Only the ``worker``, ``hardware`` and ``task`` kinds name a
subject a label can name, so only they are scored; ``failure_type`` and
``burst`` patterns are left out. A detection is a true positive when its
(kind, key) equals a planted label's (kind, subject); every other scored
detection is a false positive; a planted label no detection names is a
false negative. Precision = TP / (TP + FP), recall = TP / (TP + FN), summed
over the held-out histories of a noise level.

**Methods.** ``rules``: ``dtf.core.patterns.detect_patterns`` over the whole
window, every pattern it reports; ``rules>=0.5``: those with confidence at
least 0.5 (what ``dtf failures --min-confidence 0.5`` shows).
``logistic``: per kind, a scikit-learn logistic regression over per-subject
features (counts, rates, and each count relative to the fleet's median),
trained on the ``--train`` histories of all noise levels (seeds 0..) and
scored on the ``--test`` held-out ones (seeds 1000..); a subject is
detected at probability 0.5 or more. Held-out histories come ``as trained``
and ``shifted``: bad workers failing 45 % instead of 70 % of their
attempts and the bad class 20 % instead of 35 %, which the model never saw.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dtf.core.breakers import HARDWARE_FAULTS, WORKER_FAULTS
from dtf.core.failures import FailureType
from dtf.core.patterns import FailureRecord, PatternKind, SuccessRecord, detect_patterns

F = FailureType
K = PatternKind
WINDOW_S = 3600.0
NOISE_LEVELS = (0.02, 0.05, 0.10, 0.20)
FLEET = {"cpu": 12, "cuda": 8, "webgpu": 4}
SCORED = (K.WORKER, K.HARDWARE, K.TASK)
BAD_WORKER_FAULTS = (F.HARDWARE_ERROR, F.WORKER_CRASH, F.CUDA_ERROR)
CLASS_FAULT = {"cuda": F.CUDA_ERROR, "webgpu": F.WEBGPU_CONTEXT_LOST}
NOISE_TYPES = (F.SOFTWARE_ERROR, F.RESOURCE_EXHAUSTION, F.TIMEOUT, F.COMMUNICATION_ERROR)
MAX_ATTEMPTS = 4

Label = tuple[PatternKind, str]


@dataclass
class History:
    failures: list[FailureRecord] = field(default_factory=list)
    successes: list[SuccessRecord] = field(default_factory=list)
    labels: set[Label] = field(default_factory=set)
    workers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plant:
    """How strongly the planted problems show: the share of a bad worker's
    and of the bad class's attempts that fail."""

    name: str
    bad_worker_rate: float
    bad_class_rate: float


SAME = Plant("as trained", 0.7, 0.35)
SHIFTED = Plant("shifted", 0.45, 0.2)


def synthetic_history(seed: int, noise: float, tasks: int, plant: Plant = SAME) -> History:
    rng = random.Random(f"{seed}:{noise}:{plant.name}")
    history = History()
    for hardware, count in FLEET.items():
        for _ in range(count):
            history.workers[f"w{len(history.workers):02d}"] = hardware
    bad_class = rng.choice(list(CLASS_FAULT))
    ordinary = [w for w, h in history.workers.items() if h != bad_class]
    bad_workers = set(rng.sample(ordinary, 2))
    task_ids = [f"t{n:03d}" for n in range(tasks)]
    poison = set(rng.sample(task_ids, 3))
    flaky = set(rng.sample([t for t in task_ids if t not in poison], 6))
    history.labels = {(K.WORKER, w) for w in bad_workers} | {(K.HARDWARE, bad_class)}
    history.labels |= {(K.TASK, t) for t in poison}
    world = World(rng, history, noise, plant, bad_workers, bad_class, poison, flaky)
    for task_id in task_ids:
        world.run_task(task_id)
    return history


@dataclass
class World:
    rng: random.Random
    history: History
    noise: float
    plant: Plant
    bad_workers: set[str]
    bad_class: str
    poison: set[str]
    flaky: set[str]

    def run_task(self, task_id: str) -> None:
        hardware = self.rng.choices(list(FLEET), weights=list(FLEET.values()))[0]
        candidates = [w for w, h in self.history.workers.items() if h == hardware]
        tried: list[str] = []
        at = self.rng.uniform(0.0, WINDOW_S - 600.0)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            fresh = [w for w in candidates if w not in tried] or candidates
            worker_id = self.rng.choice(fresh)
            tried.append(worker_id)
            at += self.rng.uniform(5.0, 120.0)
            failure = self.failure(task_id, worker_id, hardware)
            if failure is None:
                self.history.successes.append(SuccessRecord(task_id, worker_id, hardware, at))
                return
            record = FailureRecord(task_id, attempt, worker_id, hardware, failure, at)
            self.history.failures.append(record)

    def failure(self, task_id: str, worker_id: str, hardware: str) -> FailureType | None:
        rng = self.rng
        if task_id in self.poison:
            return F.WORKER_CRASH
        if worker_id in self.bad_workers and rng.random() < self.plant.bad_worker_rate:
            return rng.choice(BAD_WORKER_FAULTS)
        if hardware == self.bad_class and rng.random() < self.plant.bad_class_rate:
            return CLASS_FAULT[hardware]
        if task_id in self.flaky and rng.random() < 0.5:
            return F.SOFTWARE_ERROR
        if rng.random() < self.noise:
            return rng.choice([*NOISE_TYPES, F.WORKER_CRASH])
        return None


# -- the rule-based detector ---------------------------------------------------------


def rule_detections(history: History, min_confidence: float) -> set[Label]:
    patterns = detect_patterns(
        history.failures,
        now=WINDOW_S + 1000.0,
        window_s=WINDOW_S + 1000.0,
        successes=history.successes,
        min_confidence=min_confidence,
    )
    return {(p.kind, p.key) for p in patterns if p.kind in SCORED}


# -- the learned layer ---------------------------------------------------------------

Features = dict[PatternKind, dict[str, list[float]]]


def features(history: History) -> Features:
    """Per kind, per candidate subject: counts and rates, each count also
    relative to the median over the kind's candidates."""
    raw = {
        K.WORKER: _worker_features(history),
        K.HARDWARE: _hardware_features(history),
        K.TASK: _task_features(history),
    }
    return {kind: _with_relative(rows) for kind, rows in raw.items()}


def _worker_features(history: History) -> dict[str, list[float]]:
    failed_on: dict[str, set[str]] = {}
    for f in history.failures:
        failed_on.setdefault(f.task_id, set()).add(f.worker_id)
    succeeded_on: dict[str, set[str]] = {}
    for s in history.successes:
        succeeded_on.setdefault(s.task_id, set()).add(s.worker_id)
    attempts = Counter(r.worker_id for r in [*history.failures, *history.successes])
    rows = {}
    for worker_id in history.workers:
        mine = [f for f in history.failures if f.worker_id == worker_id]
        tasks = {f.task_id for f in mine}
        alone = [t for t in tasks if failed_on[t] == {worker_id}]
        cleared = [t for t in tasks if succeeded_on.get(t, set()) - {worker_id}]
        faults = sum(1 for f in mine if f.failure_type in WORKER_FAULTS)
        rate = len(mine) / max(attempts[worker_id], 1)
        rows[worker_id] = [len(mine), len(tasks), len(alone), len(cleared), faults, rate]
    return rows


def _hardware_features(history: History) -> dict[str, list[float]]:
    attempts = Counter(r.hardware_class for r in [*history.failures, *history.successes])
    rows = {}
    for hardware in FLEET:
        faults = [
            f
            for f in history.failures
            if f.hardware_class == hardware and f.failure_type in HARDWARE_FAULTS
        ]
        workers = {f.worker_id for f in faults}
        busiest = max(Counter(f.worker_id for f in faults).values(), default=0)
        rate = len(faults) / max(attempts[hardware], 1)
        rows[hardware] = [len(faults), len(workers), busiest / max(len(faults), 1), rate]
    return rows


def _task_features(history: History) -> dict[str, list[float]]:
    succeeded = {s.task_id for s in history.successes}
    by_task: dict[str, list[FailureRecord]] = {}
    for f in history.failures:
        by_task.setdefault(f.task_id, []).append(f)
    rows = {}
    for task_id, failed in by_task.items():
        workers = {f.worker_id for f in failed}
        crashes = sum(1 for f in failed if f.failure_type is F.WORKER_CRASH)
        types = len({f.failure_type for f in failed})
        rows[task_id] = [len(failed), len(workers), crashes, types, float(task_id in succeeded)]
    return rows


def _with_relative(rows: dict[str, list[float]]) -> dict[str, list[float]]:
    if not rows:
        return rows
    columns = list(zip(*rows.values(), strict=True))
    medians = [statistics.median(column) for column in columns]
    return {
        key: [*values, *(v - m for v, m in zip(values, medians, strict=True))]
        for key, values in rows.items()
    }


Model = Callable[[list[list[float]]], list[float]]


def train(histories: Iterable[History]) -> dict[PatternKind, Model]:
    samples: dict[PatternKind, tuple[list[list[float]], list[int]]] = {k: ([], []) for k in SCORED}
    for history in histories:
        for kind, rows in features(history).items():
            xs, ys = samples[kind]
            for key, row in rows.items():
                xs.append(row)
                ys.append(int((kind, key) in history.labels))
    models: dict[PatternKind, Model] = {}
    for kind, (xs, ys) in samples.items():
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        pipeline.fit(xs, ys)
        models[kind] = lambda rows, fitted=pipeline: list(fitted.predict_proba(rows)[:, 1])
    return models


def learned_detections(history: History, models: dict[PatternKind, Model]) -> set[Label]:
    found: set[Label] = set()
    for kind, rows in features(history).items():
        if not rows:
            continue
        keys = list(rows)
        for key, probability in zip(keys, models[kind](list(rows.values())), strict=True):
            if probability >= 0.5:
                found.add((kind, key))
    return found


# -- scoring -------------------------------------------------------------------------


@dataclass
class Score:
    true_positives: Counter[PatternKind] = field(default_factory=Counter)
    false_positives: Counter[PatternKind] = field(default_factory=Counter)
    false_negatives: Counter[PatternKind] = field(default_factory=Counter)

    def add(self, detected: set[Label], labels: set[Label]) -> None:
        self.true_positives.update(kind for kind, _ in detected & labels)
        self.false_positives.update(kind for kind, _ in detected - labels)
        self.false_negatives.update(kind for kind, _ in labels - detected)

    def precision(self, kind: PatternKind | None = None) -> float:
        tp, fp = self._counts(kind, self.false_positives)
        return tp / (tp + fp) if tp + fp else 1.0

    def recall(self, kind: PatternKind | None = None) -> float:
        tp, fn = self._counts(kind, self.false_negatives)
        return tp / (tp + fn) if tp + fn else 1.0

    def f1(self) -> float:
        p, r = self.precision(), self.recall()
        return 2 * p * r / (p + r) if p + r else 0.0

    def _counts(self, kind: PatternKind | None, other: Counter[PatternKind]) -> tuple[int, int]:
        if kind is None:
            return self.true_positives.total(), other.total()
        return self.true_positives[kind], other[kind]


Results = dict[tuple[str, float], dict[str, Score]]


def evaluate(args: argparse.Namespace) -> Results:
    training = [
        synthetic_history(seed, noise, args.tasks)
        for noise in NOISE_LEVELS
        for seed in range(args.train)
    ]
    models = train(training)
    methods: dict[str, Callable[[History], set[Label]]] = {
        "rules": lambda h: rule_detections(h, 0.0),
        "rules>=0.5": lambda h: rule_detections(h, 0.5),
        "logistic": lambda h: learned_detections(h, models),
    }
    results: Results = {}
    for plant in (SAME, SHIFTED):
        for noise in NOISE_LEVELS:
            scores = {name: Score() for name in methods}
            for seed in range(1000, 1000 + args.test):
                history = synthetic_history(seed, noise, args.tasks, plant)
                for name, detect in methods.items():
                    scores[name].add(detect(history), history.labels)
            results[(plant.name, noise)] = scores
    return results


def render(results: Results, args: argparse.Namespace) -> Table:
    table = Table(
        title=f"Failure patterns on {args.test} held-out histories per noise level "
        f"(learned layer trained on {args.train} per level)"
    )
    for column in ("planted", "noise", "method", "precision", "recall", "F1"):
        table.add_column(column, justify="left" if column in ("planted", "method") else "right")
    for kind in SCORED:
        table.add_column(f"{kind} P/R", justify="right")
    for (plant, noise), scores in results.items():
        for name, score in scores.items():
            per_kind = [f"{score.precision(k):.2f}/{score.recall(k):.2f}" for k in SCORED]
            table.add_row(
                plant,
                f"{noise:.0%}",
                name,
                f"{score.precision():.3f}",
                f"{score.recall():.3f}",
                f"{score.f1():.3f}",
                *per_kind,
            )
        table.add_section()
    return table


def verdict(results: Results) -> str:
    margins = [
        scores["logistic"].f1() - max(scores["rules"].f1(), scores["rules>=0.5"].f1())
        for scores in results.values()
    ]
    shown = ", ".join(f"{m:+.3f}" for m in margins)
    if all(m >= 0.05 for m in margins):
        return f"learned layer beats the rules in every held-out set (F1 margin {shown})"
    return f"learned layer does not clearly beat the rules (F1 margin {shown})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=40, help="training histories per level")
    parser.add_argument("--test", type=int, default=40, help="held-out histories per level")
    parser.add_argument("--tasks", type=int, default=300, help="tasks per history")
    args = parser.parse_args()
    results = evaluate(args)
    console = Console(width=140)
    console.print(render(results, args))
    console.print(verdict(results))


if __name__ == "__main__":
    main()
