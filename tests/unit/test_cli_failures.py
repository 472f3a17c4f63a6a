"""``dtf failures``: its help, its options, and the table it prints from the API's JSON."""

from __future__ import annotations

import io
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner
from rich.console import Console

from dtf.cli import cli
from dtf.cli.failures import print_patterns
from dtf.core.failures import FailureType
from dtf.core.pattern_records import FailureRecord, SuccessRecord
from dtf.core.patterns import detect_patterns

NOW = 5000.0


def sample_reply() -> dict[str, Any]:
    """The API's reply for a worker that crashed three tasks which then ran elsewhere,
    encoded as the coordinator encodes it."""
    failures = [
        FailureRecord(
            t, 1, "gpu-7", "cuda", FailureType.CUDA_ERROR, NOW - 10 - 60 * i, f"stderr: {t}"
        )
        for i, t in enumerate(["a", "b", "c"])
    ]
    successes = [SuccessRecord(t, "gpu-2", "cuda", NOW) for t in ["a", "b", "c"]]
    patterns = detect_patterns(failures, successes=successes, now=NOW, min_confidence=0.5)
    return {
        "patterns": msgspec.to_builtins(patterns),
        "failures_considered": 3,
        "window_s": 3600.0,
    }


def rendered(
    reply: dict[str, Any], min_confidence: float = 0.5, min_probability: float = 0.0
) -> str:
    out = Console(record=True, width=220, file=io.StringIO())
    print_patterns(out, reply, min_confidence, min_probability, now=NOW)
    return out.export_text()


def pattern(kind: str, key: str, confidence: float, learned: float | None) -> dict[str, Any]:
    return {
        "kind": kind,
        "key": key,
        "count": 3,
        "confidence": confidence,
        "learned_probability": learned,
        "last_at": NOW - 5,
        "action": f"look at {key}",
    }


MIXED = {
    "patterns": [
        pattern("task", "t9", 0.6, 0.92),
        pattern("failure_type", "timeout", 0.7, None),
        pattern("worker", "w3", 0.8, 0.31),
    ],
    "failures_considered": 20,
    "window_s": 3600.0,
}


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(cli, ["failures", "--help"])
    assert result.exit_code == 0, result.output
    for words in (
        "Usage: dtf failures",
        "--window",
        "--min-confidence",
        "--min-probability",
        "--json",
        "DTF_API_KEY",
    ):
        assert words in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # a window must be positive
        (["--window", "0"], "--window"),
        # confidence is a share
        (["--min-confidence", "1.5"], "--min-confidence"),
        # so is probability
        (["--min-probability", "-0.2"], "--min-probability"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["failures", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_table_shows_each_pattern_and_what_to_do() -> None:
    text = rendered(sample_reply())
    for words in (
        "pattern",
        "key",
        "count",
        "confidence",
        "learned",
        "last seen",
        "recommended action",
    ):
        assert words in text
    worker_row = next(line for line in text.splitlines() if "gpu-7" in line)
    assert "worker" in worker_row
    assert "0.78" in worker_row
    assert "1.00" in worker_row
    assert "10.0s ago" in worker_row
    assert "Quarantine worker gpu-7" in text
    assert text.rstrip().endswith(
        "1 pattern with confidence >= 0.5 among 3 failures in the last 60m"
    )


def test_no_patterns_says_how_much_was_looked_at() -> None:
    text = rendered({"patterns": [], "failures_considered": 12, "window_s": 600.0}, 0.9)
    assert text.strip() == "0 patterns with confidence >= 0.9 among 12 failures in the last 10m"


def test_rows_keep_the_api_order_and_show_a_dash_without_a_model() -> None:
    rows = [line for line in rendered(MIXED, 0.0).splitlines() if "look at" in line]
    assert [row.split("│")[2].strip() for row in rows] == ["t9", "timeout", "w3"]
    assert rows[1].split("│")[5].strip() == "-"
    assert (
        rendered(MIXED, 0.0)
        .rstrip()
        .endswith("3 patterns with confidence >= 0 among 20 failures in the last 60m")
    )


def test_min_probability_hides_only_scored_patterns_and_says_how_many() -> None:
    text = rendered(MIXED, 0.0, min_probability=0.5)
    assert "t9" in text and "timeout" in text
    assert "w3" not in text
    assert text.rstrip().endswith(
        "2 patterns with confidence >= 0 and learned probability >= 0.5 (1 more below it) "
        "among 20 failures in the last 60m"
    )
