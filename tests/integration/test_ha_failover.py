"""Failover of a real coordinator cluster on loopback: three etcd members, three
``dtf coordinator --cluster`` processes (snapshots every 200 entries) and three workers,
each worker and the client given every coordinator URL.

The cluster is shared by the module's tests; each test starts by bringing back every
node and every worker. Workers start out connected to node-1, which leads then, so
killing the first leader also cuts the workers' and the client's connections. Times
from a kill to the next accepted write and to the next leader are printed (run with
``-s``), never asserted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtf.client import Client, WaitTimeout
from dtf.errors import DtfError
from dtf.local.ha_cluster import HaSettings
from dtf.testing.etcd import require_etcd
from dtf.testing.ha import FailoverCluster, poll, read_runs, recording_command, run_problems
from dtf.testing.waiting import wait_for

pytestmark = pytest.mark.integration

Record = dict[str, Any]
SNAPSHOT_EVERY = 200
SHORT_TASKS = 300
SHORT_TASK_S = 0.2
LONG_TASK_S = 6.0
DONE_BEFORE_KILL = 40
ROUND_TASKS = 50
WAIT_S = 60.0
FAILOVER_WAIT_S = 20.0
STRANDED_WAIT_S = 8.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailoverCluster]:
    require_etcd()
    settings = HaSettings(
        tmp_path_factory.mktemp("ha") / "cluster",
        workers=3,
        slots=6,
        base_port=0,
        coordinator_flags=("--snapshot-every", str(SNAPSHOT_EVERY)),
    )
    started = FailoverCluster(settings)
    print(f"cluster logs in {started.logs_dir}")
    try:
        started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture
def whole(cluster: FailoverCluster) -> FailoverCluster:
    cluster.restore()
    return cluster


def client_for(cluster: FailoverCluster, first: str, timeout_s: float = 10.0) -> Client:
    """A client given every coordinator URL, ``first``'s first."""
    urls = [cluster.url_of(first), *(url for url in cluster.urls if url != cluster.url_of(first))]
    return Client(urls, cluster.admin_key, timeout_s=timeout_s)


def command_task(task_id: str, command: str) -> Record:
    return {"id": task_id, "type": "command", "config": {"command": command}}


def seconds_to_accepted_write(client: Client, task_id: str, since: float) -> float:
    """Submit one task (its id makes resending it harmless) until a coordinator accepts it."""

    def accepted() -> float | None:
        try:
            client.submit(command_task(task_id, "true"))
        except DtfError:
            return None
        return time.monotonic() - since

    return poll(accepted, FAILOVER_WAIT_S, f"a coordinator to accept task {task_id}")


def finished_tasks(
    cluster: FailoverCluster, node_id: str, task_ids: list[str]
) -> dict[str, Record]:
    """``node_id``'s view of every task, once it shows all of ``task_ids`` finished."""

    def all_finished() -> dict[str, Record] | None:
        tasks = all_tasks(cluster, node_id)
        finished = all(tasks[task_id]["finished_at"] is not None for task_id in task_ids)
        return tasks if finished else None

    return poll(all_finished, WAIT_S, f"{node_id} to see {len(task_ids)} tasks finished")


def all_tasks(cluster: FailoverCluster, node_id: str) -> dict[str, Record]:
    tasks = cluster.get(node_id, "/api/tasks", limit=100_000)["tasks"]
    return {task["id"]: task for task in tasks}


def stall_report(cluster: FailoverCluster, task_ids: list[str]) -> str:
    """What each node says of its log position, its workers and a few unfinished
    tasks: the state to read when tasks stop finishing."""
    lines = []
    for node in cluster.nodes:
        try:
            status = cluster.get(node.node_id, "/api/cluster/status")
            overview = cluster.get(node.node_id, "/api/status")
            workers = cluster.get(node.node_id, "/api/workers")["workers"]
            tasks = all_tasks(cluster, node.node_id)
        except Exception as exc:  # a node down is part of the picture, not a failure
            lines.append(f"{node.node_id}: unreachable ({exc})")
            continue
        leader = (status.get("leader") or {}).get("node_id")
        lines.append(f"{node.node_id}: applied seq {status['applied_seq']}, leader {leader}")
        lines.append(
            f"  open breakers {overview['breakers']}, out of service {overview['out_of_service']}"
        )
        lines += [
            f"  worker {w['id']} {w['status']} ({w['status_reason']}), slots {w['slots']}, "
            f"leases {w['leases']}, takes work {w['takes_work']}, "
            f"health {w['health']['score']}, breaker {w['breaker']['state']}"
            for w in workers
        ]
        unknown: Record = {"status": "not known here", "attempts": []}
        unfinished = [
            {"id": t, **tasks.get(t, unknown)}
            for t in task_ids
            if tasks.get(t, {}).get("finished_at") is None
        ]
        lines.append(f"  unfinished: {dict(Counter(t['status'] for t in unfinished))}")
        lines += [
            f"  task {t['id']} {t['status']}, lease {t.get('lease')}, attempts "
            f"{[(a['number'], a['status'], a['worker_id']) for a in t['attempts']]}"
            for t in unfinished[:3]
        ]
    return "\n".join(lines)


def recording_problems(task: Record) -> list[str]:
    """What is wrong with a finished task's attempts as the coordinator recorded them."""
    numbers = [attempt["number"] for attempt in task["attempts"]]
    succeeded = [a["number"] for a in task["attempts"] if a["status"] == "succeeded"]
    problems = []
    if task["status"] != "completed":
        problems.append(f"{task['id']} is {task['status']}")
    if len(set(numbers)) != len(numbers):
        problems.append(f"{task['id']} has attempts {numbers}: one recorded twice")
    if len(succeeded) != 1:
        problems.append(f"{task['id']} succeeded in attempts {succeeded}")
    return problems


def test_kill_9_of_the_leader_loses_and_repeats_nothing(
    whole: FailoverCluster, tmp_path: Path
) -> None:
    cluster, runs_file = whole, tmp_path / "runs.log"
    leader = cluster.leader(FAILOVER_WAIT_S)
    with client_for(cluster, leader["node_id"]) as client:
        client.submit(command_task("long", recording_command(runs_file, LONG_TASK_S)))
        poll(lambda: read_runs(runs_file).get("long"), WAIT_S, "the long task to start")
        specs = [
            command_task(f"short-{n:03d}", recording_command(runs_file, SHORT_TASK_S))
            for n in range(SHORT_TASKS)
        ]
        accepted = client.submit_many(specs)
        wait_for(
            lambda: (
                sum(run.completed for runs in read_runs(runs_file).values() for run in runs)
                >= DONE_BEFORE_KILL
            ),
            WAIT_S,
            f"{DONE_BEFORE_KILL} tasks to finish",
        )

        killed_at, killed_wall = time.monotonic(), time.time()
        cluster.kill(leader["node_id"])
        write_s = seconds_to_accepted_write(client, "after-kill", killed_at)
        successor = cluster.successor(leader["epoch"], FAILOVER_WAIT_S)
        print(
            f"kill -9 of leader {leader['node_id']}: next write accepted after {write_s:.3f}s, "
            f"{successor['node_id']} leads after {time.monotonic() - killed_at:.3f}s (at most)"
        )
        cluster.restart_coordinator(leader["node_id"])  # it catches up while work goes on
        try:
            client.wait(["long", *accepted, "after-kill"], WAIT_S)
        except WaitTimeout as stalled:
            report = stall_report(cluster, ["long", *accepted, "after-kill"])
            raise AssertionError(f"{stalled}\n{report}") from None

    cluster.wait_formed()
    for node in cluster.nodes:
        tasks = finished_tasks(cluster, node.node_id, ["long", *accepted])
        assert [p for task_id in accepted for p in recording_problems(tasks[task_id])] == []
        assert [(a["number"], a["status"]) for a in tasks["long"]["attempts"]] == [(1, "succeeded")]

    runs = read_runs(runs_file)
    assert run_problems(runs) == []
    assert [task_id for task_id in accepted if not any(r.completed for r in runs[task_id])] == []
    [long_run] = runs["long"]
    assert (long_run.attempt, long_run.completed) == (1, True)
    assert long_run.started_at < killed_wall < float(long_run.ended_at or 0)
    print(f"tasks that ran more than once: {sorted(t for t, r in runs.items() if len(r) > 1)}")


def test_a_restarted_follower_catches_up_from_snapshot_and_log(whole: FailoverCluster) -> None:
    cluster = whole
    leader = cluster.leader(FAILOVER_WAIT_S)["node_id"]
    follower = next(node.node_id for node in cluster.nodes if node.node_id != leader)
    cluster.terminate(follower).wait_or_kill(cluster.settings.stop_timeout_s)
    left_at = int(cluster.get(leader, "/api/cluster/status")["applied_seq"])

    with client_for(cluster, leader) as client:
        rounds = 0

        def compacted_past_follower() -> bool:
            """Push another round of tasks; true once the log no longer holds what the
            stopped follower would read next, so it can only start from the snapshot."""
            nonlocal rounds
            rounds += 1
            specs = [{"type": "command", "config": {"command": "true"}}] * ROUND_TASKS
            client.wait(client.submit_many(specs), WAIT_S)
            position = cluster.log_position()
            return position.snapshot_seq > left_at and position.first_seq > left_at + 1

        wait_for(compacted_past_follower, WAIT_S, "the leader to snapshot and compact the log")
    pushed_to = cluster.get(leader, "/api/cluster/status")["applied_seq"]

    restarted_at = time.monotonic()
    cluster.restart_coordinator(follower)
    caught_up = poll(lambda: applied_past(cluster, follower, pushed_to), WAIT_S, "a catch-up")
    print(
        f"{follower} stopped at seq {left_at}, restarted after {rounds} rounds of "
        f"{ROUND_TASKS} tasks at seq {pushed_to}, caught up to seq {caught_up} in "
        f"{time.monotonic() - restarted_at:.3f}s"
    )
    assert all_tasks(cluster, follower) == all_tasks(cluster, leader)


def applied_past(cluster: FailoverCluster, node_id: str, seq: int) -> int | None:
    """``node_id``'s applied seq once it answers and has applied ``seq``."""
    status = cluster.statuses()[node_id]
    return status["applied_seq"] if status is not None and status["applied_seq"] >= seq else None


def test_workers_of_a_follower_still_get_work_after_the_leader_changes(
    whole: FailoverCluster,
) -> None:
    cluster = whole
    cluster.restart_workers(sorted(cluster.worker_processes()))  # all on node-1 now
    leader = cluster.leader(FAILOVER_WAIT_S)["node_id"]
    cluster.hand_leadership_to(next(n.node_id for n in cluster.nodes[1:] if n.node_id != leader))
    with client_for(cluster, "node-1") as client:
        task_id = client.submit(command_task("after-hand-over", "true"))
        try:
            client.wait([task_id], STRANDED_WAIT_S)
        except WaitTimeout:
            workers = {w["id"]: f"{w['status']}: {w['status_reason']}" for w in client.workers()}
            raise AssertionError(
                f"{task_id} still waits {STRANDED_WAIT_S:g}s after the hand-over "
                f"({client.get(task_id)['waiting']['summary']}); workers: {workers}"
            ) from None


def ended_term(cluster: FailoverCluster, node_id: str, epoch: int) -> Record:
    """Term ``epoch`` in ``node_id``'s leadership history, once it has ended."""

    def ended() -> Record | None:
        history = cluster.get(node_id, "/api/cluster/leader")["history"]
        term = next((term for term in history if term["epoch"] == epoch), None)
        return term if term is not None and term["ended_at"] is not None else None

    return poll(ended, FAILOVER_WAIT_S, f"{node_id} to see term {epoch} end")


def hand_over(cluster: FailoverCluster, how: str) -> tuple[Record, list[str]]:
    """Stop the leader (``sigterm`` or ``kill``), print how long until the next leader and
    the next accepted write; return the ended term and the nodes still running."""
    leader = cluster.leader(FAILOVER_WAIT_S)
    running = [n for n, p in cluster.coordinator_processes().items() if p.is_running]
    with client_for(cluster, leader["node_id"], timeout_s=2.0) as client:
        stopped_at = time.monotonic()
        if how == "kill":
            cluster.kill(leader["node_id"])
        else:
            cluster.terminate(leader["node_id"])
        successor = cluster.successor(leader["epoch"], FAILOVER_WAIT_S)
        elected_s = time.monotonic() - stopped_at
        write_s = seconds_to_accepted_write(client, f"after-{how}", stopped_at)
    print(
        f"{how} of leader {leader['node_id']}: {successor['node_id']} leads after "
        f"{elected_s:.3f}s (at most), next write accepted after {write_s:.3f}s"
    )
    return leader, [node_id for node_id in running if node_id != leader["node_id"]]


def test_sigterm_of_the_leader_hands_over_at_once_and_says_so(whole: FailoverCluster) -> None:
    cluster = whole
    resigned, survivors = hand_over(cluster, "sigterm")
    exit_code = cluster.coordinator_processes()[resigned["node_id"]].wait_or_kill(
        cluster.settings.stop_timeout_s
    )
    assert exit_code == 0, f"the resigned leader exited {exit_code}, not 0"
    for node_id in survivors:
        assert ended_term(cluster, node_id, resigned["epoch"])["end_reason"] == "resigned: shutdown"


def test_every_node_records_a_killed_leaders_term_as_lease_expired(
    cluster: FailoverCluster,
) -> None:
    """Needs two coordinators running, not three (the one stopped before need not return)."""
    expired, survivors = hand_over(cluster, "kill")
    for node_id in survivors:
        assert ended_term(cluster, node_id, expired["epoch"])["end_reason"] == "lease expired"
        current = cluster.get(node_id, "/api/cluster/leader")["leader"]
        assert current is not None and current["epoch"] > expired["epoch"], (node_id, current)
