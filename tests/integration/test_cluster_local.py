"""``dtf cluster local``: how it lays out nodes, what it refuses, and whole runs as a real
``dtf`` process (etcd members, coordinators, workers) until SIGINT, with and without
killing the leader, and until kill -9 (which must leave nothing it started running)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
import pytest

from dtf.client import Client
from dtf.local.cluster import ClusterError
from dtf.local.ha_cluster import (
    HaCluster,
    HaSettings,
    coordinator_argv,
    formation_problem,
    newest_leader,
    plan_nodes,
)
from dtf.testing.etcd import require_etcd

pytestmark = pytest.mark.integration

Record = dict[str, Any]
ETCD_URLS = ["http://127.0.0.1:2001", "http://127.0.0.1:2002", "http://127.0.0.1:2003"]
START_TIMEOUT_S = 90
EVENT_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
TASKS_TIMEOUT_S = 120
TASKS = 20


def test_each_node_talks_to_its_own_etcd_member_first(tmp_path: Path) -> None:
    nodes = plan_nodes(tmp_path, [8090, 8091, 8092], ETCD_URLS)
    assert [node.node_id for node in nodes] == ["node-1", "node-2", "node-3"]
    assert [node.url for node in nodes] == [f"http://127.0.0.1:{p}" for p in (8090, 8091, 8092)]
    assert [node.etcd_member for node in nodes] == ["m0", "m1", "m2"]
    assert nodes[1].etcd_endpoints == (ETCD_URLS[1], ETCD_URLS[0], ETCD_URLS[2])
    assert nodes[2].data_dir == tmp_path / "node-3"


def test_coordinator_command_line(tmp_path: Path) -> None:
    node = plan_nodes(tmp_path, [8090, 8091, 8092], ETCD_URLS)[2]
    snapshot_flags = ("--snapshot-every", "200")
    argv = coordinator_argv(
        HaSettings(tmp_path, python="python", coordinator_flags=snapshot_flags), node
    )
    assert argv[:4] == ["python", "-m", "dtf.cli", "coordinator"]
    flags = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert flags == {
        "--cluster": "local",
        "--etcd": f"{ETCD_URLS[2]},{ETCD_URLS[0]},{ETCD_URLS[1]}",
        "--advertise": "http://127.0.0.1:8092",
        "--node-id": "node-3",
        "--host": "127.0.0.1",
        "--port": "8092",
        "--data-dir": str(tmp_path / "node-3"),
        "--log-level": "info",
        "--snapshot-every": "200",
    }


def status(leader: str | None, *nodes: str) -> Record:
    term = {"node_id": leader, "epoch": 7} if leader else None
    return {"leader": term, "nodes": [{"node_id": node} for node in nodes]}


@pytest.mark.parametrize(
    ("statuses", "problem"),
    [
        # both nodes see both and the same leader
        ({"a": status("b", "a", "b"), "b": status("b", "a", "b")}, None),
        # one node is not up yet
        ({"a": status("b", "a", "b"), "b": None}, "b does not answer"),
        # a node still runs on its own
        ({"a": status("a", "a"), "b": status("b", "a", "b")}, "a sees nodes a"),
        # an election is under way on one node
        ({"a": status("b", "a", "b"), "b": status(None, "a", "b")}, "leaders None, b"),
        # the nodes disagree about the leader
        ({"a": status("a", "a", "b"), "b": status("b", "a", "b")}, "leaders a, b"),
    ],
)
def test_formation_problem(statuses: dict[str, Record | None], problem: str | None) -> None:
    found = formation_problem(statuses, ["a", "b"])
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_newest_leader_is_the_latest_epoch_any_node_knows() -> None:
    replies: list[Record | None] = [
        None,  # a node that does not answer
        {"leader": {"node_id": "a", "epoch": 5}},  # a node that has not seen the change yet
        {"leader": {"node_id": "b", "epoch": 9}},
        {"leader": None},  # a node that saw the old term end
    ]
    assert newest_leader(replies) == {"node_id": "b", "epoch": 9}
    assert newest_leader([None, {"leader": None}]) is None


def test_missing_etcd_exits_2_saying_how_to_install_it(tmp_path: Path) -> None:
    env = {**child_env(), "PATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dtf.cli", "cluster", "local", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "apt-get install etcd-server" in result.stderr
    assert "etcd-io/etcd/releases" in result.stderr
    assert "3.5 or newer" in result.stderr
    assert not (tmp_path / "d").exists()


def test_refuses_a_data_dir_in_use(tmp_path: Path) -> None:
    require_etcd()
    (tmp_path / "leftover").write_text("from an earlier run")
    with pytest.raises(ClusterError, match="is not empty"):
        HaCluster(HaSettings(tmp_path), lambda kind, fields: None).start()


def test_refuses_a_taken_port(tmp_path: Path) -> None:
    require_etcd()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = HaSettings(tmp_path / "data", nodes=1, base_port=port)
        with pytest.raises(ClusterError, match=f"port {port} .* in use.*--base-port"):
            HaCluster(settings, lambda kind, fields: None).start()
    assert not (tmp_path / "data").exists()


@dataclass
class Run:
    """A ``dtf cluster local --json-events`` process and the events it printed."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)  # None: end of output
    events: list[Record] = field(default_factory=list)
    returned: int = 0  # events before this index were looked at by an earlier wait

    def next_event(self, kind: str, timeout_s: float = EVENT_TIMEOUT_S) -> Record:
        """The next event of ``kind`` not yet returned; every event read is kept in ``events``."""
        return self.wait_for(lambda event: event["event"] == kind, f"a {kind} event", timeout_s)

    def wait_for(
        self, matches: Callable[[Record], bool], what: str, timeout_s: float = EVENT_TIMEOUT_S
    ) -> Record:
        """The first event after the last one returned that ``matches``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for index in range(self.returned, len(self.events)):
                if matches(self.events[index]):
                    self.returned = index + 1
                    return self.events[index]
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                self.lines.put(None)  # later waits see the end of the output too
                raise AssertionError(f"output ended before {what}; saw {self.kinds()}")
            self.events.append(json.loads(line))
        raise AssertionError(f"no {what} within {timeout_s}s; saw {self.kinds()}")

    def kinds(self) -> list[str]:
        return [event["event"] for event in self.events]

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def read_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Any]:
    require_etcd()
    runs: list[Run] = []

    def start(*flags: str) -> Run:
        argv = [sys.executable, "-m", "dtf.cli", "cluster", "local", "--json-events"]
        argv += ["--base-port", "0", "--data-dir", str(tmp_path / "cluster"), *flags]
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, text=True, env=child_env(), start_new_session=True
        )
        run = Run(process)
        assert process.stdout is not None
        threading.Thread(target=read_lines, args=(process.stdout, run.lines), daemon=True).start()
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.process.poll() is None:  # a failed test must not leave a cluster behind
            stop_or_kill(run)
        assert run.process.stdout is not None
        run.process.stdout.close()


def stop_or_kill(run: Run) -> None:
    """SIGTERM the run, then SIGKILL it and every process it started (its orphan guard
    would kill them too, but cleaning up after a failed test does not rely on it)."""
    descendants = run.children()
    run.process.terminate()
    try:
        run.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        run.process.kill()
        run.process.wait(timeout=STOP_TIMEOUT_S)
    for process in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def run_tasks(started: Record, command: str) -> list[Record]:
    specs = [{"type": "command", "config": {"command": command}} for _ in range(TASKS)]
    with Client(started["urls"], started["admin_key"], timeout_s=10) as client:
        task_ids = client.submit_many(specs)
        tasks: list[Record] = client.wait(task_ids, timeout_s=TASKS_TIMEOUT_S)
    return tasks


def stop_and_check_nothing_left(run: Run, children: list[psutil.Process]) -> None:
    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(timeout=STOP_TIMEOUT_S) == 0
    assert run.next_event("stopped", timeout_s=5)["event"] == "stopped"
    deadline = time.monotonic() + 5
    while (left := [p for p in children if is_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, [(p.pid, p.cmdline()) for p in left]


def is_alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(400)
def test_three_nodes_run_tasks_restart_a_dead_worker_and_stop_on_sigint(start_run: Any) -> None:
    run: Run = start_run("--nodes", "3", "--workers", "2")
    started = run.next_event("started", START_TIMEOUT_S)
    assert [node["node_id"] for node in started["nodes"]] == ["node-1", "node-2", "node-3"]
    roles = [node["role"] for node in started["nodes"]]  # an election may be under way again
    assert set(roles) <= {"leader", "follower"} and roles.count("leader") <= 1
    assert len(started["urls"]) == 3
    children = run.children()
    names = " ".join(" ".join(p.cmdline()) for p in children)
    assert names.count("etcd --name") == 3 and names.count("dtf.cli coordinator") == 3

    tasks = run_tasks(started, "true")
    assert [task["status"] for task in tasks] == ["completed"] * TASKS

    worker = started["workers"][0]
    os.kill(worker["pid"], signal.SIGKILL)
    restarted = run.next_event("node_restarted")
    assert (restarted["node_id"], restarted["kind"]) == (worker["worker_id"], "worker")
    assert "SIGKILL" in restarted["after"]
    stop_and_check_nothing_left(run, children + run.children())


@pytest.mark.timeout(400)
def test_fault_injection_kills_the_leader_and_work_still_completes(start_run: Any) -> None:
    run: Run = start_run("--nodes", "3", "--workers", "2", "--fault-injection", "--kill-every", "2")
    started = run.next_event("started", START_TIMEOUT_S)
    children = run.children()
    tasks = run_tasks(started, "sleep 0.2")
    assert [task["status"] for task in tasks] == ["completed"] * TASKS

    killed = run.next_event("leader_killed")
    elected = run.next_event("leader_elected")
    assert (elected["previous_node_id"], elected["previous_epoch"]) == (
        killed["node_id"], killed["epoch"],
    )  # fmt: skip
    assert elected["epoch"] > killed["epoch"]
    killed_index = run.events.index(killed)
    run.returned = killed_index + 1  # the restart may come before or after the new leader
    restarted = run.wait_for(
        lambda event: event["event"] == "node_restarted" and event["node_id"] == killed["node_id"],
        f"a restart of {killed['node_id']}",
    )
    assert (restarted["kind"], restarted["after"]) == ("coordinator", "was killed by SIGKILL")
    stop_and_check_nothing_left(run, children + run.children())


@pytest.mark.timeout(300)
def test_kill_9_of_the_run_leaves_no_process_it_started(start_run: Any) -> None:
    run: Run = start_run("--nodes", "1", "--workers", "1")
    started = run.next_event("started", START_TIMEOUT_S)
    with Client(started["urls"], started["admin_key"], timeout_s=10) as client:
        client.submit({"type": "command", "config": {"command": "sleep 307"}})
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while ["sleep", "307"] not in command_lines(run.children()):
        assert time.monotonic() < deadline, "the task's sleep did not start"
        time.sleep(0.2)
    children = run.children()
    names = " ".join(" ".join(command) for command in command_lines(children))
    assert names.count("etcd --name") == 1 and names.count("dtf.cli worker") == 1

    run.process.kill()
    run.process.wait(timeout=10)
    deadline = time.monotonic() + 30
    while (left := [p for p in children if is_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = command_lines(left)
    for process in left:  # so that a failure leaves nothing behind either
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    assert not survivors, survivors


def command_lines(processes: list[psutil.Process]) -> list[list[str]]:
    """The command lines of those of ``processes`` still there."""
    lines = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            lines.append(process.cmdline())
    return lines
