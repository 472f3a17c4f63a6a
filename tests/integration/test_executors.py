"""Executors running real processes: commands, pytest runs and benchmarks."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from dtf.core.model import FailureKind, Outcome, TaskSpec, TestOutcome
from dtf.protocol import Assign
from dtf.worker.executors import execute
from dtf.worker.executors.process import keep_descriptors_private

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class RecordingObserver:
    def __init__(self, on_start: Callable[[int], None] = lambda pgid: None) -> None:
        self.started: list[int] = []
        self.ended: list[int] = []
        self.on_start = on_start

    def process_started(self, pgid: int) -> None:
        self.started.append(pgid)
        self.on_start(pgid)

    def process_ended(self, pgid: int) -> None:
        self.ended.append(pgid)


def make_assign(task_type: str, config: dict[str, Any], timeout_s: float = 60.0) -> Assign:
    spec_fields = {"type": task_type, "config": config, "timeout_seconds": timeout_s}
    spec = msgspec.convert(spec_fields, TaskSpec)
    return Assign("task-1", 2, 17, spec, lease_timeout_s=10.0)


def run(
    tmp_path: Path,
    task_type: str,
    config: dict[str, Any],
    *,
    timeout_s: float = 60.0,
    observer: RecordingObserver | None = None,
) -> Outcome:
    async def main() -> Outcome:
        cancelled = asyncio.Event()
        assign = make_assign(task_type, config, timeout_s)
        return await execute(assign, workdir=tmp_path, cancelled=cancelled, observer=observer)

    return asyncio.run(main())


def is_gone(pid: int, within_s: float = 10.0) -> bool:
    """True once ``pid`` has exited (a zombie counts); SIGKILL lands asynchronously."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


# -- command -----------------------------------------------------------------


def test_shell_command_gets_env_output_and_metrics(tmp_path: Path) -> None:
    command = (
        'echo "task=$DTF_TASK_ID attempt=$DTF_ATTEMPT greeting=$GREETING"; echo warn >&2; '
        'pwd; printf \'{"loss": 0.5}\' > "$DTF_RESULT_FILE"'
    )
    config = {"command": command, "env": {"GREETING": "hi"}, "cwd": str(tmp_path)}
    observer = RecordingObserver()
    outcome = run(tmp_path, "command", config, observer=observer)
    assert (outcome.failure, outcome.exit_code, outcome.error) == (None, 0, None)
    assert outcome.stdout_tail == f"task=task-1 attempt=2 greeting=hi\n{tmp_path}\n"
    assert outcome.stderr_tail == "warn\n"
    assert outcome.metrics == {"loss": 0.5}
    assert observer.started == observer.ended and len(observer.started) == 1
    assert list(tmp_path.iterdir()) == []


def test_argv_command_is_not_run_by_a_shell(tmp_path: Path) -> None:
    outcome = run(tmp_path, "command", {"command": ["echo", "$HOME", "a  b"]})
    assert outcome.stdout_tail == "$HOME a  b\n"


def test_a_program_gone_from_where_it_was_found_is_searched_for_again(tmp_path: Path) -> None:
    path = os.pathsep.join([str(tmp_path / "early"), str(tmp_path / "late"), os.defpath])
    for place in ("early", "late"):
        (tmp_path / place).mkdir()
        tool = tmp_path / place / "dtf-test-tool"
        tool.write_text(f"#!/bin/sh\necho {place}\n", encoding="utf-8")
        tool.chmod(0o755)
    config = {"command": ["dtf-test-tool"], "env": {"PATH": path}}
    assert run(tmp_path, "command", config).stdout_tail == "early\n"
    (tmp_path / "early" / "dtf-test-tool").unlink()
    outcome = run(tmp_path, "command", config)
    assert (outcome.failure, outcome.stdout_tail) == (None, "late\n")


# How a task starts: posix_spawn for a known file in the worker's directory, Popen
# for a cwd or a name exec must search for. Both give the task the same process.
START_PATHS = [
    pytest.param({}, id="posix_spawn"),
    pytest.param({"cwd": "."}, id="popen-cwd"),
    pytest.param({"env": {"PATH": "relative-dir:" + os.defpath}}, id="popen-search"),
]
STARTED_AS = (
    "import os, sys; "
    "print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid(), sys.stdin.read() == '', "
    "sorted(int(f) for f in os.listdir('/proc/self/fd')))"
)


@pytest.mark.parametrize("start", START_PATHS)
def test_a_task_leads_its_own_session_with_default_signals_and_only_its_own_descriptors(
    tmp_path: Path, start: dict[str, Any]
) -> None:
    inherited = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(inherited, True)
    try:
        keep_descriptors_private()
        assert not os.get_inheritable(inherited)
        config = {**start, "cwd": str(tmp_path)} if "cwd" in start else start
        outcome = run(tmp_path, "command", {"command": ["python3", "-c", STARTED_AS], **config})
        signals = run(
            tmp_path, "command", {"command": ["grep", "SigIgn", "/proc/self/status"], **config}
        )
    finally:
        os.close(inherited)
    # listdir's own descriptor is the 3
    assert (outcome.error, outcome.stdout_tail) == (None, "True True True [0, 1, 2, 3]\n")
    # Python ignores SIGPIPE and SIGXFSZ; the task gets their defaults back. No standard
    # signal (1-31) is ignored. (glibc's posix_spawn leaves its own two, 32 and 33,
    # ignored; glibc programs install their handlers at start.)
    ignored = int(signals.stdout_tail.split()[1], 16)
    assert ignored & ((1 << 31) - 1) == 0


def test_a_task_reaped_by_the_kernel_still_ends(tmp_path: Path) -> None:
    """With SIGCHLD ignored, exited children are reaped at once and waitpid finds
    none: the task ends with what subprocess reports then (0), not a hang."""
    outcomes: list[Outcome] = []
    runner = threading.Thread(
        target=lambda: outcomes.append(run(tmp_path, "command", {"command": ["true"]})),
        daemon=True,  # a hang must fail this test, not the session
    )
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        runner.start()
        runner.join(30.0)
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert [(o.failure, o.exit_code) for o in outcomes] == [(None, 0)]


def test_nonzero_exit(tmp_path: Path) -> None:
    outcome = run(tmp_path, "command", {"command": "echo failing >&2; exit 3"})
    assert (outcome.failure, outcome.exit_code) == (FailureKind.EXIT_NONZERO, 3)
    assert outcome.stderr_tail == "failing\n"


@pytest.mark.parametrize(
    ("config", "error"),
    [
        # executable not found
        ({"command": ["/nonexistent/tool"]}, "cannot start '/nonexistent/tool'"),
        # working directory missing
        ({"command": "true", "cwd": "/nonexistent/dir"}, "working directory '/nonexistent/dir'"),
        # config that does not match the task type
        ({"command": "true", "shell": "bash"}, "invalid command task config"),
        # an argument no process can be given
        ({"command": ["echo", "nul\u0000byte"]}, "cannot start 'echo': embedded null byte"),
    ],
)
def test_task_that_cannot_start_is_an_executor_error(
    tmp_path: Path, config: dict[str, Any], error: str
) -> None:
    outcome = run(tmp_path, "command", config)
    assert outcome.failure is FailureKind.EXECUTOR_ERROR
    assert outcome.error is not None and outcome.error.startswith(error)


def test_exit_is_seen_without_pidfds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "pidfd_open")
    outcome = run(tmp_path, "command", {"command": "echo waited; exit 4"})
    assert (outcome.exit_code, outcome.stdout_tail) == (4, "waited\n")


def test_death_by_signal_is_a_crash(tmp_path: Path) -> None:
    outcome = run(tmp_path, "command", {"command": ["sh", "-c", "kill -SEGV $$"]})
    assert (outcome.failure, outcome.signal) == (FailureKind.CRASHED, 11)


def test_invalid_result_file_is_noted_not_fatal(tmp_path: Path) -> None:
    outcome = run(tmp_path, "command", {"command": 'echo "{not json" > "$DTF_RESULT_FILE"'})
    assert outcome.failure is None
    assert outcome.error is not None and "not valid JSON" in outcome.error


def test_output_is_kept_as_a_bounded_tail(tmp_path: Path) -> None:
    command = "head -c 3000000 /dev/zero | tr '\\0' x; echo END"
    outcome = run(tmp_path, "command", {"command": command})
    assert len(outcome.stdout_tail) == 4096
    assert outcome.stdout_tail.endswith("xxxEND\n")


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    outcome = run(tmp_path, "command", {"command": "sleep 30 & echo $!; wait"}, timeout_s=0.3)
    assert (outcome.failure, outcome.signal) == (FailureKind.TIMEOUT, 15)
    assert is_gone(int(outcome.stdout_tail))


def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    command = "trap '' TERM; echo ready; sleep 30"
    outcome = run(tmp_path, "command", {"command": command}, timeout_s=0.3)
    assert (outcome.failure, outcome.signal) == (FailureKind.TIMEOUT, 9)


def test_leftover_background_process_is_killed_when_the_task_ends(tmp_path: Path) -> None:
    outcome = run(tmp_path, "command", {"command": "sleep 60 >/dev/null 2>&1 & echo $!"})
    assert outcome.failure is None
    assert is_gone(int(outcome.stdout_tail))


def cancel_on_start(
    tmp_path: Path, cancel: Callable[[asyncio.Event, asyncio.Task[Outcome]], None]
) -> Awaitable[tuple[Outcome | None, RecordingObserver]]:
    async def main() -> tuple[Outcome | None, RecordingObserver]:
        cancelled = asyncio.Event()
        loop = asyncio.get_running_loop()
        observer = RecordingObserver(lambda pgid: loop.call_soon(cancel, cancelled, task))
        assign = make_assign("command", {"command": "sleep 30"})
        task = asyncio.ensure_future(
            execute(assign, workdir=tmp_path, cancelled=cancelled, observer=observer)
        )
        try:
            return await task, observer
        except asyncio.CancelledError:
            return None, observer

    return main()


def test_cancel_event_kills_the_task(tmp_path: Path) -> None:
    outcome, observer = asyncio.run(cancel_on_start(tmp_path, lambda event, task: event.set()))
    assert outcome is not None and outcome.failure is FailureKind.EXECUTOR_ERROR
    assert outcome.error is not None and "cancelled" in outcome.error
    assert is_gone(observer.started[0])


def test_cancelling_the_asyncio_task_kills_the_process(tmp_path: Path) -> None:
    outcome, observer = asyncio.run(cancel_on_start(tmp_path, lambda event, task: task.cancel()))
    assert outcome is None
    assert observer.ended == observer.started
    assert is_gone(observer.started[0])


# -- test --------------------------------------------------------------------


def test_passing_test_file_reports_every_case(tmp_path: Path) -> None:
    outcome = run(tmp_path, "test", {"path": str(EXAMPLES / "test_sample.py")})
    assert (outcome.failure, outcome.exit_code) == (None, 0)
    outcomes = [case.outcome for case in outcome.test_cases]
    assert outcomes.count(TestOutcome.PASSED) == 6
    assert outcomes.count(TestOutcome.SKIPPED) == 1
    assert outcomes.count(TestOutcome.XFAILED) == 1
    assert len(outcomes) == 8
    skipped = next(c for c in outcome.test_cases if c.outcome is TestOutcome.SKIPPED)
    assert skipped.message == "Skipped: only meaningful on Windows"


def test_failing_test_completes_the_task_with_a_failed_case(tmp_path: Path) -> None:
    outcome = run(tmp_path, "test", {"path": str(EXAMPLES / "test_with_failure.py")})
    assert (outcome.failure, outcome.exit_code) == (None, 1)
    failed = [c for c in outcome.test_cases if c.outcome is TestOutcome.FAILED]
    assert [c.node_id.split("::")[-1] for c in failed] == ["test_deliberately_fails"]
    assert failed[0].message is not None and "fails on purpose" in failed[0].message


def test_inline_source_with_fixture_error_and_args(tmp_path: Path) -> None:
    source = (
        "import pytest\n"
        "@pytest.fixture\n"
        "def broken():\n"
        "    raise RuntimeError('fixture broke')\n"
        "def test_uses_broken(broken): pass\n"
        "def test_selected(): pass\n"
        "def test_deselected(): assert False\n"
    )
    config = {"path": "suite/test_inline.py", "source": source, "args": ["-k", "not deselected"]}
    outcome = run(tmp_path, "test", config)
    by_name = {case.node_id.split("::")[-1]: case for case in outcome.test_cases}
    assert set(by_name) == {"test_uses_broken", "test_selected"}
    assert by_name["test_uses_broken"].outcome is TestOutcome.ERROR
    assert by_name["test_uses_broken"].message == "RuntimeError: fixture broke"
    assert by_name["test_selected"].outcome is TestOutcome.PASSED
    assert (outcome.failure, outcome.exit_code) == (None, 1)
    assert list(tmp_path.iterdir()) == []


def test_no_tests_collected_is_not_success(tmp_path: Path) -> None:
    config = {"path": "test_empty.py", "source": "def helper(): pass\n"}
    outcome = run(tmp_path, "test", config)
    assert (outcome.failure, outcome.exit_code) == (FailureKind.EXIT_NONZERO, 5)
    assert outcome.error == "no tests were collected"


# -- benchmark ---------------------------------------------------------------


def test_benchmark_metrics_come_from_the_function(tmp_path: Path) -> None:
    config = {
        "entry_point": "matmul_bench:run",
        "params": {"batch_size": 2, "size": 16, "repeats": 3},
        "python_path": [str(EXAMPLES)],
    }
    outcome = run(tmp_path, "benchmark", config)
    assert outcome.failure is None, outcome.stderr_tail
    assert outcome.metrics["size"] == 16
    assert outcome.metrics["gflops"] > 0
    assert outcome.metrics["latency_ms_p90"] >= outcome.metrics["latency_ms_median"] > 0


@pytest.mark.parametrize(
    ("body", "failure", "error"),
    [
        # the entry point is missing from the module
        ("", FailureKind.EXECUTOR_ERROR, "cannot load benchmark entry point 'bench_mod:run'"),
        # the function returns something other than a dict
        ("def run(): return 42\n", FailureKind.EXIT_NONZERO, "returned int"),
        # the function raises
        ("def run(): raise ValueError('bad')\n", FailureKind.EXIT_NONZERO, "exited with code 1"),
        # the function runs out of memory
        ("def run(): raise MemoryError\n", FailureKind.OOM, "ran out of memory"),
    ],
)
def test_benchmark_failures(tmp_path: Path, body: str, failure: FailureKind, error: str) -> None:
    module_dir = tmp_path / "code"
    module_dir.mkdir()
    (module_dir / "bench_mod.py").write_text(body)
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = {"entry_point": "bench_mod:run", "cwd": str(module_dir)}
    outcome = run(workdir, "benchmark", config)
    assert outcome.failure is failure
    assert outcome.error is not None and error in outcome.error
    assert list(workdir.iterdir()) == []


def test_benchmark_uses_this_interpreter(tmp_path: Path) -> None:
    module_dir = tmp_path / "code"
    module_dir.mkdir()
    (module_dir / "which.py").write_text(
        "import os, sys\ndef run(): return {'exe': sys.executable, 'pid': os.getpid()}\n"
    )
    config = {"entry_point": "which:run", "python_path": [str(module_dir)]}
    outcome = run(tmp_path, "benchmark", config)
    assert outcome.metrics["exe"] == sys.executable
    assert outcome.metrics["pid"] != os.getpid()
