"""Rule-based failure patterns against the learned layer, on labelled synthetic histories.

Prints precision and recall of each method on held-out histories, per noise
level; asserts nothing. The issue asks for a learned layer only if it beats
the rule-based one here. ``--export PATH`` instead trains the learned layer
and writes its weights module (``dtf/core/pattern_weights.py`` is what the
defaults give; tests/unit/test_pattern_model.py checks it still does).

    .venv/bin/python bench/patterns.py [--train 40] [--test 40] [--tasks 300]
        [--rate-ratio 2] [--export dtf/core/pattern_weights.py]

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
least 0.5 (what ``dtf failures --min-confidence 0.5`` shows); ``rules,
worker rate>=2x``: the rules with a worker reported only when its failure
rate is at least ``--rate-ratio`` times the fleet's (a cheaper idea than a
model). ``logistic``: per kind, a scikit-learn logistic regression over
``dtf.core.pattern_model.subject_features`` (counts, rates, and each
relative to the median over the kind's subjects), trained on the
``--train`` histories of all noise levels (seeds 0..) and scored on the
``--test`` held-out ones (seeds 1000..); a subject is detected at
probability 0.5 or more. ``rules+learned``: the rule patterns whose
``learned_probability`` from ``detect_patterns`` is at least 0.5 (what
``dtf failures --min-probability 0.5`` shows); it uses the committed
weights, and the last line says how far they are from the ones trained
here. Held-out histories come ``as trained`` and ``shifted``: bad workers
failing 45 % instead of 70 % of their attempts and the bad class 20 %
instead of 35 %, which the model never saw.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from dtf.core import pattern_model
from dtf.core.failures import FailureType
from dtf.core.pattern_model import (
    LinearModel,
    feature_names,
    learned_probabilities,
    subject_features,
)
from dtf.core.pattern_records import FailureRecord, SuccessRecord
from dtf.core.patterns import FailurePattern, PatternKind, detect_patterns

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


# -- the rule-based detector, alone and with the learned layer --------------------


def rule_patterns(history: History) -> list[FailurePattern]:
    return detect_patterns(
        history.failures,
        now=WINDOW_S + 1000.0,
        window_s=WINDOW_S + 1000.0,
        successes=history.successes,
    )


def scored(patterns: Iterable[FailurePattern], min_confidence: float = 0.0) -> set[Label]:
    return {
        (p.kind, p.key) for p in patterns if p.kind in SCORED and p.confidence >= min_confidence
    }


def rate_relative_detections(
    history: History, found: list[FailurePattern], ratio: float
) -> set[Label]:
    """The rules with a worker reported only when its failure rate is at
    least ``ratio`` times the fleet's (the colleague's cheaper idea)."""
    attempts = Counter(r.worker_id for r in [*history.failures, *history.successes])
    failed = Counter(f.worker_id for f in history.failures)
    fleet_rate = len(history.failures) / max(attempts.total(), 1)
    return {
        (kind, key)
        for kind, key in scored(found)
        if kind is not K.WORKER or failed[key] / attempts[key] >= ratio * fleet_rate
    }


# -- the learned layer ---------------------------------------------------------------


def train(histories: Iterable[History]) -> dict[str, LinearModel]:
    """Per kind, a standardised logistic regression over ``subject_features``,
    fitted to convergence so the weights do not depend on the path taken."""
    samples: dict[str, tuple[list[list[float]], list[int]]] = {k.value: ([], []) for k in SCORED}
    for history in histories:
        for kind, rows in subject_features(history.failures, history.successes).items():
            xs, ys = samples[kind]
            for key, row in rows.items():
                xs.append(row)
                ys.append(int((kind, key) in history.labels))
    return {kind: _fitted(kind, xs, ys) for kind, (xs, ys) in samples.items()}


def _fitted(kind: str, xs: list[list[float]], ys: list[int]) -> LinearModel:
    scaler = StandardScaler().fit(xs)
    regression = LogisticRegression(max_iter=10_000, tol=1e-12)
    regression.fit(scaler.transform(xs), ys)
    return linear_model(feature_names(kind), scaler, regression)


def linear_model(
    features: tuple[str, ...], scaler: StandardScaler, regression: LogisticRegression
) -> LinearModel:
    """The fitted scaler and regression as the core's model."""
    return LinearModel(
        features=features,
        means=tuple(float(v) for v in scaler.mean_),
        scales=tuple(float(v) for v in scaler.scale_),
        coefficients=tuple(float(v) for v in regression.coef_[0]),
        intercept=float(regression.intercept_[0]),
    )


def training_histories(args: argparse.Namespace) -> list[History]:
    return [
        synthetic_history(seed, noise, args.tasks)
        for noise in NOISE_LEVELS
        for seed in range(args.train)
    ]


def learned_detections(history: History, models: dict[str, LinearModel]) -> set[Label]:
    probabilities = learned_probabilities(history.failures, history.successes, models)
    return {(K(kind), key) for (kind, key), p in probabilities.items() if p >= 0.5}


def weights_module(models: dict[str, LinearModel], args: argparse.Namespace) -> str:
    """``dtf/core/pattern_weights.py`` holding ``models``, formatted as ruff formats it."""
    lines = [
        '"""Logistic-regression weights for dtf.core.pattern_model, one model per kind.',
        "",
        f"Generated by `bench/patterns.py --train {args.train} --tasks {args.tasks} --export`",
        "from the synthetic histories of seeds 0.. per noise level; do not edit by hand.",
        '"""',
    ]
    fields = {
        "FEATURES": ("tuple[str, ...]", lambda m: m.features),
        "MEANS": ("tuple[float, ...]", lambda m: m.means),
        "SCALES": ("tuple[float, ...]", lambda m: m.scales),
        "COEFFICIENTS": ("tuple[float, ...]", lambda m: m.coefficients),
    }
    for name, (annotation, values) in fields.items():
        lines += ["", f"{name}: dict[str, {annotation}] = {{"]
        for kind, model in models.items():
            lines += [
                f'    "{kind}": (',
                *(f"        {_literal(v)}," for v in values(model)),
                "    ),",
            ]
        lines.append("}")
    lines += ["", "INTERCEPTS: dict[str, float] = {"]
    lines += [f'    "{kind}": {model.intercept!r},' for kind, model in models.items()]
    return "\n".join([*lines, "}", ""])


def _literal(value: str | float) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


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
Method = Callable[[History, list[FailurePattern]], set[Label]]


def evaluate(args: argparse.Namespace, models: dict[str, LinearModel]) -> Results:
    """Each method on the held-out histories; the ``rules*`` methods share one
    run of ``detect_patterns`` per history (with the committed weights)."""
    methods: dict[str, Method] = {
        "rules": lambda h, found: scored(found),
        "rules>=0.5": lambda h, found: scored(found, min_confidence=0.5),
        f"rules, worker rate>={args.rate_ratio:g}x": lambda h, found: rate_relative_detections(
            h, found, args.rate_ratio
        ),
        "logistic": lambda h, found: learned_detections(h, models),
        "rules+learned": lambda h, found: scored(
            p for p in found if p.learned_probability is None or p.learned_probability >= 0.5
        ),
    }
    results: Results = {}
    for plant in (SAME, SHIFTED):
        for noise in NOISE_LEVELS:
            scores = {name: Score() for name in methods}
            for seed in range(1000, 1000 + args.test):
                history = synthetic_history(seed, noise, args.tasks, plant)
                found = rule_patterns(history)
                for name, detect in methods.items():
                    scores[name].add(detect(history, found), history.labels)
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
        scores["rules+learned"].f1() - max(scores["rules"].f1(), scores["rules>=0.5"].f1())
        for scores in results.values()
    ]
    shown = ", ".join(f"{m:+.3f}" for m in margins)
    if all(m >= 0.05 for m in margins):
        return f"rules+learned beats the rules in every held-out set (F1 margin {shown})"
    return f"rules+learned does not clearly beat the rules (F1 margin {shown})"


def weights_gap(trained: dict[str, LinearModel], committed: dict[str, LinearModel]) -> float:
    """The largest difference between any two corresponding weights."""
    return max(
        abs(a - b)
        for kind, model in trained.items()
        for a, b in zip(_parameters(model), _parameters(committed[kind]), strict=True)
    )


def _parameters(model: LinearModel) -> list[float]:
    return [*model.means, *model.scales, *model.coefficients, model.intercept]


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=40, help="training histories per level")
    parser.add_argument("--test", type=int, default=40, help="held-out histories per level")
    parser.add_argument("--tasks", type=int, default=300, help="tasks per history")
    parser.add_argument("--rate-ratio", type=float, default=2.0, help="for the rate rule")
    parser.add_argument("--export", metavar="PATH", help="write the trained weights module")
    return parser.parse_args(argv)


def main() -> None:
    args = arguments()
    models = train(training_histories(args))
    if args.export:
        with open(args.export, "w") as out:
            out.write(weights_module(models, args))
        return
    results = evaluate(args, models)
    console = Console(width=160)
    console.print(render(results, args))
    console.print(verdict(results))
    gap = weights_gap(models, pattern_model.MODELS)
    console.print(
        f"rules+learned used the committed weights: at most {gap:.2g} from those trained here"
    )


if __name__ == "__main__":
    main()
