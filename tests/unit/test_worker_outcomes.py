"""How a finished task process becomes an Outcome: pure classification."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from dtf.core.model import FailureKind
from dtf.worker.benchmark_runner import ENTRY_POINT_ERROR, RESULT_ERROR, RunnerError, encode_metrics
from dtf.worker.executors.benchmark import benchmark_outcome
from dtf.worker.executors.outcomes import classify, process_outcome, read_result_file
from dtf.worker.executors.process import ProcessResult, StopReason, TailBuffer
from dtf.worker.executors.pytest_task import pytest_outcome

SIGKILL, SIGTERM, SIGSEGV = -signal.SIGKILL, -signal.SIGTERM, -signal.SIGSEGV


def ended(returncode: int | None, stderr: str = "", **kwargs: object) -> ProcessResult:
    return ProcessResult(returncode, 0.5, stderr_tail=stderr, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("result", "failure"),
    [
        # clean exit
        (ended(0), None),
        # plain non-zero exit
        (ended(3), FailureKind.EXIT_NONZERO),
        # Python MemoryError with a non-zero exit
        (ended(1, "Traceback ...\nMemoryError\n"), FailureKind.OOM),
        # a shell reporting its child killed by SIGKILL (exit 137)
        (ended(137, "sh: line 1:  4242 Killed   python big.py\n"), FailureKind.OOM),
        # "Killed" with an ordinary exit code is just text
        (ended(2, "Killed the messenger\n"), FailureKind.EXIT_NONZERO),
        # SIGKILL we did not send, with an allocation failure printed
        (ended(SIGKILL, "std::bad_alloc\n"), FailureKind.OOM),
        # SIGKILL we did not send, nothing printed: a crash, not provably OOM
        (ended(SIGKILL), FailureKind.CRASHED),
        # segmentation fault
        (ended(SIGSEGV, "MemoryError\n"), FailureKind.CRASHED),
        # our timeout: killed by SIGTERM or SIGKILL, still a timeout
        (ended(SIGTERM, stopped=StopReason.TIMEOUT), FailureKind.TIMEOUT),
        (ended(SIGKILL, "Killed\n", stopped=StopReason.TIMEOUT), FailureKind.TIMEOUT),
        # the process exited 0 just as the timeout fired
        (ended(0, stopped=StopReason.TIMEOUT), FailureKind.TIMEOUT),
        # cancelled by the coordinator or the agent
        (ended(SIGTERM, stopped=StopReason.CANCELLED), FailureKind.EXECUTOR_ERROR),
        # could not start at all
        (ended(None, spawn_error="cannot start 'x'"), FailureKind.EXECUTOR_ERROR),
    ],
)
def test_classify(result: ProcessResult, failure: FailureKind | None) -> None:
    assert classify(result, timeout_s=10)[0] is failure


def test_process_outcome_names_the_signal_and_timeout() -> None:
    crashed = process_outcome(ended(SIGSEGV), timeout_s=10)
    assert (crashed.signal, crashed.exit_code) == (signal.SIGSEGV, None)
    assert crashed.error == "killed by signal SIGSEGV"
    timed_out = process_outcome(ended(SIGTERM, stopped=StopReason.TIMEOUT), timeout_s=2.5)
    assert timed_out.error is not None and "2.5s" in timed_out.error


@pytest.mark.parametrize(
    ("returncode", "failure", "error"),
    [
        # all tests passed
        (0, None, None),
        # some tests failed: the run still completed
        (1, None, None),
        # pytest interrupted, internal error, usage error
        (2, FailureKind.EXECUTOR_ERROR, "pytest was interrupted: boom"),
        (3, FailureKind.EXECUTOR_ERROR, "pytest hit an internal error: boom"),
        (4, FailureKind.EXECUTOR_ERROR, "pytest usage error: boom"),
        # no tests collected is not success
        (5, FailureKind.EXIT_NONZERO, "no tests were collected"),
        # pytest killed by a signal stays a crash
        (SIGSEGV, FailureKind.CRASHED, "killed by signal SIGSEGV"),
    ],
)
def test_pytest_exit_codes(returncode: int, failure: FailureKind | None, error: str | None) -> None:
    outcome = pytest_outcome(ended(returncode, "\nboom\n"), timeout_s=10)
    assert (outcome.failure, outcome.error) == (failure, error)
    assert outcome.exit_code == (returncode if returncode >= 0 else None)


@pytest.mark.parametrize(
    ("returncode", "failure"),
    [
        # entry point cannot be imported: this worker lacks the code
        (ENTRY_POINT_ERROR, FailureKind.EXECUTOR_ERROR),
        # the function returned something that is not a JSON dict
        (RESULT_ERROR, FailureKind.EXIT_NONZERO),
        # an exception inside the function
        (1, FailureKind.EXIT_NONZERO),
    ],
)
def test_benchmark_runner_exit_codes(returncode: int, failure: FailureKind) -> None:
    outcome = benchmark_outcome(ended(returncode, "Traceback\nValueError: bad size\n"), 10)
    assert outcome.failure is failure


def test_benchmark_entry_point_error_message_is_the_runners() -> None:
    result = ended(ENTRY_POINT_ERROR, "cannot load benchmark entry point 'x:y': ImportError\n")
    assert (
        benchmark_outcome(result, 10).error
        == "cannot load benchmark entry point 'x:y': ImportError"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1, 2], "returned list; it must return a dict"),  # not a dict
        ({1: 2.0}, "returned dict; it must return a dict with string keys"),  # non-string key
        ({"x": object()}, "not JSON"),  # value not serialisable
        ({"x": float("nan")}, "not JSON"),  # NaN is not JSON
    ],
)
def test_encode_metrics_rejects(value: object, message: str) -> None:
    with pytest.raises(RunnerError, match=message) as excinfo:
        encode_metrics("bench:run", value)
    assert excinfo.value.exit_code == RESULT_ERROR


def test_encode_metrics_accepts_json_dict() -> None:
    assert encode_metrics("bench:run", {"gflops": 1.5, "shape": [2, 2]}) == (
        '{"gflops": 1.5, "shape": [2, 2]}'
    )


def test_tail_buffer_keeps_last_bytes() -> None:
    tail = TailBuffer(limit=8)
    for chunk in (b"0123", b"456789", b"abcdefghijklmnop", b"XY"):
        tail.write(chunk)
    assert tail.text() == "klmnopXY"


def test_tail_buffer_survives_split_utf8() -> None:
    tail = TailBuffer(limit=3)
    tail.write("€uro".encode())
    assert tail.text().endswith("uro")


@pytest.mark.parametrize(
    ("content", "metrics", "note"),
    [
        ('{"loss": 0.25}', {"loss": 0.25}, None),  # a JSON object
        ("[1, 2]", {}, "DTF_RESULT_FILE holds a JSON list, not an object; metrics ignored"),
        ("", {}, "DTF_RESULT_FILE is not valid JSON"),  # written but empty
        ("{oops", {}, "DTF_RESULT_FILE is not valid JSON"),  # truncated
    ],
)
def test_read_result_file(
    tmp_path: Path, content: str, metrics: dict[str, float], note: str | None
) -> None:
    path = tmp_path / "result.json"
    path.write_text(content)
    found, found_note = read_result_file(path)
    assert found == metrics
    assert (found_note or "").startswith(note or "")
    assert (found_note is None) == (note is None)
    assert not path.exists()


def test_missing_result_file_means_no_metrics(tmp_path: Path) -> None:
    assert read_result_file(tmp_path / "absent.json") == ({}, None)
