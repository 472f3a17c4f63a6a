"""The coordinator's recovery config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtf.coordinator.recovery_config import load_recovery_config
from dtf.core.failures import DEFAULT_RULES, FailureType
from dtf.core.model import HardwareClass
from dtf.core.recovery_policy import RecoveryMode, Strategy
from dtf.errors import InvalidRequest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "recovery.yaml"


def test_the_shipped_example_loads() -> None:
    policy, rules = load_recovery_config(EXAMPLE)
    assert policy.mode is RecoveryMode.PROGRESSIVE
    assert policy.batch_size_floor == 2
    assert policy.hardware_ladders[HardwareClass.CUDA][-1] is Strategy.FALLBACK_CPU
    assert policy.failure_ladders[FailureType.RESOURCE_EXHAUSTION][0] is Strategy.REDUCE_BATCH_SIZE
    assert rules[0].name == "nccl-timeout"
    assert rules[1:] == DEFAULT_RULES


def test_an_empty_file_means_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    policy, rules = load_recovery_config(path)
    assert policy.mode is RecoveryMode.PROGRESSIVE
    assert rules == DEFAULT_RULES


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # a strategy that does not exist, named with its place
        ("hardware_ladders:\n  gpu: [delayed_retry, pray]\n", "pray"),
        # a rule with an unknown failure type
        ("classification_rules:\n  - {name: x, failure_type: gremlins}\n", "gremlins"),
        # not YAML at all
        ("mode: [unclosed\n", "not valid YAML"),
        # a list where a mapping belongs
        ("- progressive\n", "must hold a mapping"),
    ],
)
def test_bad_files_are_refused_naming_the_file(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "recovery.yaml"
    path.write_text(text)
    with pytest.raises(InvalidRequest) as refused:
        load_recovery_config(path)
    assert words in refused.value.message
    assert str(path) in refused.value.message
