"""The learned layer over failure patterns: features of tiny hand-built histories,
inference from known weights, and the committed weights against their script."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from dtf.core import pattern_weights
from dtf.core.failures import FailureType
from dtf.core.pattern_model import (
    MODELS,
    RAW_FEATURES,
    LinearModel,
    feature_names,
    learned_probabilities,
    sigmoid,
    subject_features,
    with_relative,
)
from dtf.core.pattern_records import FailureRecord, SuccessRecord

F = FailureType
BENCH = Path(__file__).resolve().parents[2] / "bench" / "patterns.py"

# a: failed on w1 (software) then w2 (crash), never succeeded;
# b: crashed w1, then succeeded on w2; c: CUDA errors on g1 and g2, then ran on CPU (w3);
# d: succeeded on w1.
FAILURES = [
    FailureRecord("a", 1, "w1", "cpu", F.SOFTWARE_ERROR, 1.0),
    FailureRecord("a", 2, "w2", "cpu", F.WORKER_CRASH, 2.0),
    FailureRecord("b", 1, "w1", "cpu", F.WORKER_CRASH, 3.0),
    FailureRecord("c", 1, "g1", "cuda", F.CUDA_ERROR, 4.0),
    FailureRecord("c", 2, "g2", "cuda", F.CUDA_ERROR, 5.0),
]
SUCCESSES = [
    SuccessRecord("b", "w2", "cpu", 6.0),
    SuccessRecord("c", "w3", "cpu", 7.0),
    SuccessRecord("d", "w1", "cpu", 8.0),
]


def test_worker_features_of_a_tiny_history() -> None:
    rows = subject_features(FAILURES, SUCCESSES)["worker"]
    assert list(rows) == ["g1", "g2", "w1", "w2", "w3"]
    # failures, tasks, failed only here, succeeded elsewhere, worker faults, failure rate;
    # then each minus the median over the five workers (1, 1, 0, 1, 1, 2/3)
    assert rows["w1"] == pytest.approx([2, 2, 1, 1, 1, 2 / 3, 1, 1, 1, 0, 0, 0])
    assert rows["w2"] == pytest.approx([1, 1, 0, 0, 1, 1 / 2, 0, 0, 0, -1, 0, -1 / 6])
    assert rows["g1"] == pytest.approx([1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1 / 3])
    assert rows["w3"] == pytest.approx([0, 0, 0, 0, 0, 0, -1, -1, 0, -1, -1, -2 / 3])


def test_hardware_features_of_a_tiny_history() -> None:
    rows = subject_features(FAILURES, SUCCESSES)["hardware"]
    # hardware faults, workers with one, busiest worker's share, fault rate; then
    # each minus the median over the two classes (their mean)
    assert rows == {
        "cpu": pytest.approx([0, 0, 0, 0, -1, -1, -0.25, -0.5]),
        "cuda": pytest.approx([2, 2, 0.5, 1, 1, 1, 0.25, 0.5]),
    }


def test_task_features_of_a_tiny_history() -> None:
    rows = subject_features(FAILURES, SUCCESSES)["task"]
    assert list(rows) == ["a", "b", "c"]  # d never failed: no candidate
    # failures, workers, worker crashes, failure types, succeeded; medians (2, 2, 1, 1, 1)
    assert rows["a"] == pytest.approx([2, 2, 1, 2, 0, 0, 0, 0, 1, -1])
    assert rows["b"] == pytest.approx([1, 1, 1, 1, 1, -1, -1, 0, 0, 0])


def test_no_records_no_candidates() -> None:
    assert subject_features([], []) == {"worker": {}, "hardware": {}, "task": {}}
    assert learned_probabilities([], []) == {}


def test_relative_to_the_median_of_an_even_count() -> None:
    rows = with_relative({"x": [1.0], "y": [2.0], "z": [4.0], "w": [10.0]})
    assert {key: row[1] for key, row in rows.items()} == {"x": -2, "y": -1, "z": 1, "w": 7}


def test_probability_from_known_weights() -> None:
    # (3 - 1) / 2 = 1 standard deviation, times ln 3: odds of 3 to 1
    one = LinearModel(("x",), (1.0,), (2.0,), (math.log(3),), 0.0)
    assert one.probability([3.0]) == pytest.approx(0.75, abs=1e-12)
    # -1 + 0.5 * (4 - 0) / 1 + 2 * (5 - 5) / 10 = 1
    two = LinearModel(("x", "y"), (0.0, 5.0), (1.0, 10.0), (0.5, 2.0), -1.0)
    assert two.probability([4.0, 5.0]) == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-12)
    with pytest.raises(ValueError):
        two.probability([4.0])


def test_sigmoid_at_the_extremes() -> None:
    assert sigmoid(0.0) == 0.5
    assert sigmoid(-1000.0) == 0.0
    assert sigmoid(1000.0) == 1.0


def test_probabilities_only_for_kinds_with_a_model() -> None:
    width = len(feature_names("task"))
    crashes = feature_names("task").index("worker_crashes")
    coefficients = tuple(1.0 if i == crashes else 0.0 for i in range(width))
    model = LinearModel(feature_names("task"), (0.0,) * width, (1.0,) * width, coefficients, 0.0)
    probabilities = learned_probabilities(FAILURES, SUCCESSES, {"task": model})
    assert probabilities == {
        ("task", "a"): pytest.approx(sigmoid(1.0)),
        ("task", "b"): pytest.approx(sigmoid(1.0)),
        ("task", "c"): pytest.approx(0.5),
    }


def test_committed_weights_fit_the_features() -> None:
    assert set(MODELS) == set(RAW_FEATURES)
    for kind, model in MODELS.items():
        assert model.features == feature_names(kind)
        width = len(model.features)
        assert len(model.means) == len(model.scales) == len(model.coefficients) == width
        assert all(scale > 0 for scale in model.scales)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """bench/patterns.py, imported as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_patterns", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_core_inference_matches_scikit_learn(bench: ModuleType) -> None:
    xs = [[0.0, 1.0], [1.0, 3.0], [2.0, 2.0], [3.0, 7.0], [4.0, 5.0], [5.0, 4.0]]
    ys = [0, 0, 1, 0, 1, 1]
    scaler = StandardScaler().fit(xs)
    regression = LogisticRegression().fit(scaler.transform(xs), ys)
    model = bench.linear_model(("x", "y"), scaler, regression)
    expected = regression.predict_proba(scaler.transform(xs))[:, 1]
    assert [model.probability(row) for row in xs] == pytest.approx(list(expected), abs=1e-12)


def test_committed_weights_are_what_the_script_trains(bench: ModuleType) -> None:
    """Training on the default synthetic histories takes about a second."""
    args = bench.arguments([])
    trained = bench.train(bench.training_histories(args))
    assert {kind: m.features for kind, m in trained.items()} == {
        kind: m.features for kind, m in MODELS.items()
    }
    assert bench.weights_gap(trained, MODELS) < 1e-9
    committed_text = Path(pattern_weights.__file__).read_text()
    assert bench.weights_module(MODELS, args) == committed_text
