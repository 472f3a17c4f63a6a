"""The history checker on hand-built histories: a sound one, and ones breaking each rule."""

from __future__ import annotations

import msgspec
import pytest

from dtf.testing.history import (
    AttemptSeen,
    History,
    Rule,
    Submitted,
    TaskSeen,
    Violation,
    check,
)
from dtf.worker.audit import AuditEvent, AuditRecord

NODES = ["n1", "n2"]


def process(
    event: AuditEvent, task: str, attempt: int, at: float, worker: str = "w1", fence: int = 0
) -> AuditRecord:
    """An audit record; the fence defaults to 10 * attempt, the pid derives from both."""
    fence = fence or 10 * attempt
    pid = 1000 + 10 * attempt + (worker == "w2")
    return AuditRecord(worker, task, attempt, fence, pid, event, at, 1e9 + at)


def run(
    task: str, attempt: int, start: float, end: float | None, worker: str = "w1", fence: int = 0
) -> list[AuditRecord]:
    """A process that started at ``start`` and exited at ``end`` (None: no end recorded)."""
    records = [process(AuditEvent.STARTED, task, attempt, start, worker, fence)]
    if end is not None:
        records.append(process(AuditEvent.EXITED, task, attempt, end, worker, fence))
    return records


def killed(
    task: str, attempt: int, start: float, end: float, worker: str = "w1"
) -> list[AuditRecord]:
    return [
        process(AuditEvent.STARTED, task, attempt, start, worker),
        process(AuditEvent.KILLED, task, attempt, end, worker),
    ]


def seen(
    task: str, status: str, *attempts: tuple[str, str], nodes: list[str] = NODES
) -> list[TaskSeen]:
    """The task as every node shows it; attempt n ran on worker ``attempts[n-1][0]``."""
    recorded = tuple(
        AttemptSeen(number, worker, 10 * number, attempt_status)
        for number, (worker, attempt_status) in enumerate(attempts, start=1)
    )
    return [TaskSeen(node, task, status, recorded) for node in nodes]


def sound() -> History:
    """t1 ran once; t2 was self-fenced on w1 and ran again on w2 after the kill."""
    return History(
        nodes=list(NODES),
        submitted=[Submitted("t1", 0.0), Submitted("t2", 0.5)],
        processes=[
            *run("t1", 1, 1.0, 2.0),
            *killed("t2", 1, 1.5, 4.0),
            *run("t2", 2, 5.0, 6.0, worker="w2"),
        ],
        tasks=[
            *seen("t1", "completed", ("w1", "succeeded")),
            *seen("t2", "completed", ("w1", "lost"), ("w2", "succeeded")),
        ],
        ended_at=10.0,
    )


def rules(history: History) -> list[Rule]:
    return sorted({violation.rule for violation in check(history)})


def test_a_sound_history_passes() -> None:
    assert check(sound()) == []


def test_a_run_ending_as_the_next_starts_is_no_overlap() -> None:
    history = sound()
    history.processes = [*run("t1", 1, 1.0, 2.0), *killed("t2", 1, 1.5, 5.0)]
    history.processes += run("t2", 2, 5.0, 6.0, worker="w2")
    assert check(history) == []


def test_a_task_seen_but_never_acknowledged_need_not_finish() -> None:
    history = sound()
    history.tasks += seen("t3", "pending")
    assert check(history) == []


def test_a_node_behind_the_others_is_no_divergence() -> None:
    history = sound()
    history.tasks += [
        TaskSeen("n1", "t3", "completed", (AttemptSeen(1, "w1", 10, "succeeded"),)),
        TaskSeen("n2", "t3", "running", (AttemptSeen(1, "w1", 10, "running"),)),
    ]
    history.processes += run("t3", 1, 7.0, 8.0)
    assert check(history) == []


def with_tasks(*replaced: TaskSeen) -> History:
    """The sound history with some nodes' views replaced."""
    history = sound()
    keys = {(view.node, view.task_id) for view in replaced}
    history.tasks = [v for v in history.tasks if (v.node, v.task_id) not in keys] + list(replaced)
    return history


def with_processes(*records: AuditRecord, task: str = "t2") -> History:
    """The sound history with ``task``'s process records replaced."""
    history = sound()
    history.processes = [r for r in history.processes if r.task_id != task] + list(records)
    return history


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        # t1 was acknowledged but n2 does not know it
        pytest.param(
            History(
                NODES,
                [Submitted("t1", 0.0)],
                run("t1", 1, 1, 2),
                seen("t1", "completed", ("w1", "succeeded"), nodes=["n1"]),
                9.0,
            ),
            [Rule.LOST],
            id="lost-on-one-node",
        ),
        # t3 was acknowledged and no node knows it
        pytest.param(
            History(NODES, [Submitted("t3", 0.0)], [], [], 9.0), [Rule.LOST], id="lost-everywhere"
        ),
        # t1 is still running on both nodes at the end
        pytest.param(
            with_tasks(*seen("t1", "running", ("w1", "running"))),
            [Rule.UNFINISHED],
            id="unfinished",
        ),
        # n2 shows t1 failed where n1 shows it completed
        pytest.param(
            with_tasks(TaskSeen("n2", "t1", "failed", (AttemptSeen(1, "w1", 10, "failed"),))),
            [Rule.DIVERGED],
            id="diverged",
        ),
        # w1's run of t2 was never killed: it still ran when w2 started attempt 2
        pytest.param(
            with_processes(*run("t2", 1, 1.5, 5.5), *run("t2", 2, 5.0, 6.0, worker="w2")),
            [Rule.OVERLAP],
            id="overlap",
        ),
        # w1's run of t2 has no recorded end: it may run still
        pytest.param(
            with_processes(*run("t2", 1, 1.5, None), *run("t2", 2, 5.0, 6.0, worker="w2")),
            [Rule.OVERLAP],
            id="overlap-open-ended",
        ),
        # attempt 2 and 3 overlap the long first run; no node recorded an attempt 3
        pytest.param(
            with_processes(
                *run("t2", 1, 1.0, 9.0),
                *run("t2", 2, 2.0, 3.0, worker="w2"),
                *run("t2", 3, 4.0, 5.0, worker="w2"),
            ),
            [Rule.OVERLAP, Rule.MISATTRIBUTED],
            id="overlap-with-an-earlier-longer-run",
        ),
        # an exit of a process whose start was never written
        pytest.param(
            with_processes(
                *killed("t2", 1, 1.5, 4.0),
                *run("t2", 2, 5.0, 6.0, worker="w2"),
                process(AuditEvent.EXITED, "t2", 1, 7.0, "w2"),
            ),
            [Rule.UNPAIRED],
            id="unpaired-end",
        ),
        # n1 numbers attempt 1 of t1 twice
        pytest.param(
            with_tasks(
                TaskSeen("n1", "t1", "completed", (AttemptSeen(1, "w1", 10, "succeeded"),) * 2),
                TaskSeen("n2", "t1", "completed", (AttemptSeen(1, "w1", 10, "succeeded"),) * 2),
            ),
            [Rule.DUPLICATE_ATTEMPT],
            id="attempt-numbered-twice",
        ),
        # attempt 2 of t2 ran on w2, then again on w1 after it ended
        pytest.param(
            with_processes(
                *killed("t2", 1, 1.5, 4.0),
                *run("t2", 2, 5.0, 6.0, worker="w2"),
                *run("t2", 2, 7.0, 8.0, worker="w1"),
            ),
            [Rule.DUPLICATE_ATTEMPT, Rule.MISATTRIBUTED],
            id="attempt-run-twice",
        ),
        # w2 ran attempt 2 under fence 99; the nodes gave it fence 20
        pytest.param(
            with_processes(
                *killed("t2", 1, 1.5, 4.0), *run("t2", 2, 5.0, 6.0, worker="w2", fence=99)
            ),
            [Rule.MISATTRIBUTED, Rule.UNRUN_SUCCESS],
            id="wrong-fence",
        ),
        # w1 ran an attempt 3 of t2 that no node recorded
        pytest.param(
            History(
                NODES,
                [Submitted("t2", 0.5)],
                [
                    *killed("t2", 1, 1.5, 4.0),
                    *run("t2", 2, 5.0, 6.0, worker="w2"),
                    *killed("t2", 3, 7, 8),
                ],
                seen("t2", "completed", ("w1", "lost"), ("w2", "succeeded")),
                9.0,
            ),
            [Rule.MISATTRIBUTED],
            id="unrecorded-attempt",
        ),
        # the nodes accepted attempt 1 of t2 as succeeded although w1 killed it
        pytest.param(
            with_tasks(*seen("t2", "completed", ("w1", "succeeded"))),
            [Rule.UNRUN_SUCCESS, Rule.MISATTRIBUTED],
            id="success-of-a-killed-run",
        ),
        # the nodes accepted attempt 1 of t3 as succeeded and no process of it ever ran
        pytest.param(
            History(NODES, [], [], seen("t3", "completed", ("w1", "succeeded")), 9.0),
            [Rule.UNRUN_SUCCESS],
            id="success-with-no-run",
        ),
    ],
)
def test_each_broken_rule_is_named(history: History, expected: list[Rule]) -> None:
    assert rules(history) == sorted(expected)


def test_a_violation_names_the_task_and_both_runs() -> None:
    history = with_processes(*run("t2", 1, 1.5, 5.5), *run("t2", 2, 5.0, 6.0, worker="w2"))
    [violation] = check(history)
    assert violation.task_id == "t2"
    assert "attempt 1 on w1" in violation.detail and "attempt 2 on w2" in violation.detail


def test_a_history_survives_a_json_round_trip() -> None:
    history = sound()
    decoded = msgspec.json.decode(msgspec.json.encode(history), type=History)
    assert decoded == history
    assert check(decoded) == []


def ended_at(*wall_times: float) -> list[TaskSeen]:
    """t2 as in the sound history, its attempts ended by the nodes at ``wall_times``."""
    attempts = (
        AttemptSeen(1, "w1", 10, "lost", wall_times[0]),
        AttemptSeen(2, "w2", 20, "succeeded", wall_times[1]),
    )
    return [TaskSeen(node, "t2", "completed", attempts) for node in NODES]


def test_runs_started_before_their_attempts_ended_pass() -> None:
    assert check(with_tasks(*ended_at(1e9 + 4.5, 1e9 + 6.0))) == []


def test_a_run_started_after_its_attempt_ended_is_stale() -> None:
    """w1 starts attempt 1 of t2 long after the nodes ended it as lost (and t2 completed
    elsewhere): an assignment delivered late, which no overlap reveals."""
    history = with_tasks(*ended_at(1e9 + 4.5, 1e9 + 6.0))
    history.processes = [r for r in history.processes if r.task_id != "t2"]
    history.processes += [*run("t2", 2, 5.0, 6.0, worker="w2"), *killed("t2", 1, 7.0, 8.0)]
    [violation] = check(history)
    assert violation.rule is Rule.STALE_RUN
    assert "started 2.500s after n1 ended the attempt (lost)" in violation.detail


def test_a_run_of_a_cancelled_attempt_may_start_after_the_cancel() -> None:
    """The assignment and its cancellation crossed on the wire: no stale run."""
    cancelled = (AttemptSeen(1, "w1", 10, "cancelled", 1e9 + 1.0),)
    history = History(
        list(NODES),
        [Submitted("t4", 0.0)],
        killed("t4", 1, 1.2, 1.5),
        [TaskSeen(node, "t4", "cancelled", cancelled) for node in NODES],
        9.0,
    )
    assert check(history) == []


def test_violations_are_reported_per_node() -> None:
    history = with_tasks(*seen("t1", "running", ("w1", "running")))
    assert check(history) == [
        Violation(Rule.UNFINISHED, "t1", "running on n1, running on n2"),
    ]
