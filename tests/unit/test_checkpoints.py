"""Checkpoints in the pure core: recorded only under the current lease, resumed by the next attempt."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from dtf.cli.task_view import checkpoint_lines
from dtf.coordinator.checkpoint_grants import GrantIssuer
from dtf.coordinator.views import task_view
from dtf.core import commands as c
from dtf.core.checkpoints import resumable_digests
from dtf.core.model import FailureKind, LeaseRef
from dtf.core.records import AttemptRecord, CheckpointKind, TaskRecord
from dtf.core.state import State
from dtf.errors import Conflict, DtfError, InvalidRequest, NotFound
from dtf.testing.factories import StateDriver, task_spec
from dtf.worker.checkpoint import NotInTask, TaskCheckpoints, encode


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def save(
    driver: StateDriver,
    task_id: str,
    content: str,
    *,
    step: int | None = None,
    lease: LeaseRef | None = None,
    at: float | None = None,
) -> None:
    ref = lease or driver.lease(task_id)
    holder = driver.state.tasks[task_id].attempts[ref.attempt - 1].worker_id
    driver.apply(
        c.RecordCheckpoint(
            driver.at(at), holder, ref, digest_of(content), len(content), CheckpointKind.JSON, step
        )
    )


@pytest.fixture
def running(driver: StateDriver) -> StateDriver:
    """Task ``train`` running as attempt 1 on worker ``w1``; ``w2`` idle."""
    driver.register("w1", at=0.0)
    driver.submit(("train", task_spec()), at=1.0)
    driver.register("w2", at=1.5)
    driver.start("train", at=2.0)
    return driver


def test_a_save_under_the_current_lease_becomes_the_tasks_checkpoint(running: StateDriver) -> None:
    save(running, "train", "step-1", step=1, at=3.0)
    save(running, "train", "step-2", step=2, at=4.0)
    task = running.state.tasks["train"]
    assert task.checkpoint is not None
    assert (task.checkpoint.digest, task.checkpoint.step) == (digest_of("step-2"), 2)
    assert (task.checkpoint.attempt, task.checkpoint.saved_at) == (1, 4.0)
    attempt = task.attempts[0]
    assert attempt.checkpoints_saved == 2
    assert attempt.last_checkpoint == task.checkpoint


def test_the_same_save_sent_again_changes_nothing(running: StateDriver) -> None:
    save(running, "train", "step-1", step=1, at=3.0)
    save(running, "train", "step-1", step=1, at=3.5)
    task = running.state.tasks["train"]
    assert task.attempts[0].checkpoints_saved == 1
    assert task.checkpoint is not None and task.checkpoint.saved_at == 3.0


def test_the_next_attempt_resumes_from_the_latest_checkpoint(running: StateDriver) -> None:
    save(running, "train", "step-3", step=3, at=3.0)
    running.fail("train", FailureKind.CRASHED, at=4.0)
    running.tick(10.0)
    retry = running.state.tasks["train"].attempts[-1]
    assert retry.number == 2
    assert retry.resumed_from is not None
    assert (retry.resumed_from.attempt, retry.resumed_from.step) == (1, 3)
    assert retry.resumed_from.digest == digest_of("step-3")


def test_an_attempt_of_a_task_without_checkpoint_starts_fresh(running: StateDriver) -> None:
    running.fail("train", FailureKind.CRASHED, at=4.0)
    running.tick(10.0)
    assert [a.resumed_from for a in running.state.tasks["train"].attempts] == [None, None]


def test_a_fenced_attempt_cannot_overwrite_its_successors_checkpoint(running: StateDriver) -> None:
    stale = running.lease("train")
    save(running, "train", "old-1", step=1, lease=stale, at=3.0)
    running.tick(20.0)  # w1 went silent: the lease expired, attempt 2 runs on w2
    running.register("w2", at=20.5)
    running.tick(30.0)
    current = running.lease("train")
    assert current.attempt == 2
    save(running, "train", "new-5", step=5, at=31.0)
    with pytest.raises(Conflict, match="no longer holds its lease"):
        save(running, "train", "old-2", step=2, lease=stale, at=32.0)
    task = running.state.tasks["train"]
    assert task.checkpoint is not None and task.checkpoint.digest == digest_of("new-5")
    assert task.attempts[0].checkpoints_saved == 1


@pytest.mark.parametrize(
    ("command", "error"),
    [
        # a digest that is not a SHA-256
        (
            c.RecordCheckpoint(5.0, "w1", LeaseRef("train", 1, 1), "abc", 3, CheckpointKind.BYTES),
            InvalidRequest,
        ),
        # a task that does not exist
        (
            c.RecordCheckpoint(
                5.0, "w1", LeaseRef("nope", 1, 1), "0" * 64, 3, CheckpointKind.BYTES
            ),
            NotFound,
        ),
        # an attempt that never was
        (
            c.RecordCheckpoint(
                5.0, "w1", LeaseRef("train", 7, 1), "0" * 64, 3, CheckpointKind.BYTES
            ),
            Conflict,
        ),
        # the right attempt named by another worker
        (
            c.RecordCheckpoint(
                5.0, "w2", LeaseRef("train", 1, 1), "0" * 64, 3, CheckpointKind.BYTES
            ),
            Conflict,
        ),
    ],
)
def test_refused_saves(running: StateDriver, command: c.Command, error: type[DtfError]) -> None:
    with pytest.raises(error):
        running.state.check(command)


def test_snapshot_and_replay_keep_checkpoints(running: StateDriver) -> None:
    save(running, "train", "step-4", step=4, at=3.0)
    running.fail("train", FailureKind.CRASHED, at=4.0)
    running.tick(10.0)
    restored = State.restore(running.state.snapshot())
    replayed = State(running.state.config)
    for entry in running.journal:
        replayed.apply(c.decode(entry))
    for state in (restored, replayed):
        assert state.tasks["train"].checkpoint == running.state.tasks["train"].checkpoint
        assert state.tasks["train"].attempts == running.state.tasks["train"].attempts


def test_records_written_before_checkpoints_existed_still_decode() -> None:
    old_attempt = {"number": 1, "worker_id": "w1", "fence": 1, "assigned_at": 0.0}
    attempt = msgspec.msgpack.decode(msgspec.msgpack.encode(old_attempt), type=AttemptRecord)
    assert (attempt.resumed_from, attempt.checkpoints_saved, attempt.last_checkpoint) == (
        None,
        0,
        None,
    )
    old_task = {
        "id": "t",
        "spec": msgspec.to_builtins(task_spec()),
        "seq": 1,
        "submitted_at": 0.0,
        "status": "pending",
    }
    task = msgspec.msgpack.decode(msgspec.msgpack.encode(old_task), type=TaskRecord)
    assert task.checkpoint is None


def test_task_view_and_cli_say_who_saved_and_who_resumed(running: StateDriver) -> None:
    save(running, "train", "step-3", step=3, at=3.0)
    running.fail("train", FailureKind.CRASHED, at=4.0)
    running.tick(10.0)
    view = task_view(running.state, running.state.tasks["train"], now=10.0)
    assert view["checkpoint"]["step"] == 3
    assert view["attempts"][1]["resumed_from"]["attempt"] == 1
    lines = checkpoint_lines(view)
    assert lines[0].startswith("attempt 1 saved 1, last step 3 (json, 6 B, ")
    assert lines[1].startswith("attempt 2 resumed from step 3 (json, 6 B, ")
    assert lines[1].endswith(") saved by attempt 1")


# -- tokens and the task-side SDK -------------------------------------------


def test_a_grant_token_is_good_for_its_own_lease_only() -> None:
    issuer = GrantIssuer("admin-key")
    lease = LeaseRef("train", 2, 17)
    token = issuer.token(lease)
    assert issuer.lease_of("train", token) == lease
    assert issuer.lease_of("other-task", token) is None
    assert issuer.lease_of("train", token.replace("_2_", "_3_")) is None
    assert GrantIssuer("another-admin-key").lease_of("train", token) is None
    assert issuer.lease_of("train", "dtf_abc_def") is None


def test_outside_a_task_the_sdk_says_so() -> None:
    with pytest.raises(NotInTask, match="only inside a task run by a dtf worker"):
        TaskCheckpoints.from_env({"DTF_TASK_ID": "t"})


def test_checkpoints_are_bytes_or_json() -> None:
    assert encode(b"\x00\x01") == (b"\x00\x01", "application/octet-stream")
    assert encode({"step": 3}) == (b'{"step":3}', "application/json")
    with pytest.raises(InvalidRequest, match="bytes or a JSON value; object is neither"):
        encode(object())


def test_only_each_tasks_latest_checkpoint_is_resumable(running: StateDriver) -> None:
    running.submit(("never-saved", task_spec()), at=2.5)
    save(running, "train", "step-1", step=1, at=3.0)
    save(running, "train", "step-2", step=2, at=4.0)
    assert resumable_digests(running.state.tasks.values()) == {digest_of("step-2")}
