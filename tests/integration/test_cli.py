"""The real ``dtf`` command against a real coordinator and workers on loopback.

One ``LocalCluster`` (coordinator + 2 worker processes) serves the module;
every test runs ``python -m dtf.cli ...`` as a subprocess configured through
``DTF_COORDINATOR``/``DTF_API_KEY`` like a user would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtf.client import Client
from dtf.errors import DtfError
from dtf.local import ClusterSettings, LocalCluster
from dtf.local.processes import find_free_port

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
COMMAND_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    settings = ClusterSettings(
        data_dir=tmp_path_factory.mktemp("cli-cluster"), workers=2, slots=2, lease_timeout_s=5.0
    )
    with LocalCluster(settings) as running:
        yield running


def dtf(
    *args: str, cluster: LocalCluster | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``dtf ARGS`` configured by environment variables only."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    full_env["COLUMNS"] = "200"
    if cluster is not None:
        full_env.update(DTF_COORDINATOR=cluster.url, DTF_API_KEY=cluster.admin_key)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "dtf.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def dtf_json(*args: str, cluster: LocalCluster, expect_code: int = 0) -> Any:
    result = dtf(*args, "--json", cluster=cluster)
    assert result.returncode == expect_code, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_unreachable_coordinator_says_what_to_do() -> None:
    url = f"http://127.0.0.1:{find_free_port()}"
    result = dtf("tasks", env={"DTF_COORDINATOR": url})
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot reach coordinator at {url}" in lines[0]
    assert "is `dtf coordinator` running? set DTF_COORDINATOR" in lines[0]


def test_wrong_api_key_is_one_line_with_a_hint(cluster: LocalCluster) -> None:
    result = dtf("status", cluster=cluster, env={"DTF_API_KEY": "dtf_nope"})
    assert result.returncode == 1
    assert "set DTF_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_from_env_vars_and_flag_overrides_env(cluster: LocalCluster) -> None:
    status = dtf_json("status", cluster=cluster)
    assert status["data_dir"] == str(cluster.data_dir)
    assert status["workers"].get("online") == 2
    wrong = f"http://127.0.0.1:{find_free_port()}"
    result = dtf(
        "status", "--coordinator", cluster.url, cluster=cluster, env={"DTF_COORDINATOR": wrong}
    )
    assert result.returncode == 0, result.stderr
    assert str(cluster.data_dir) in result.stdout


def test_workers_lists_both_local_workers(cluster: LocalCluster) -> None:
    workers = dtf_json("workers", cluster=cluster)["workers"]
    assert {w["id"] for w in workers} >= {"local-1", "local-2"}
    table = dtf("workers", cluster=cluster).stdout
    assert "local-1" in table
    assert "online" in table


def test_submit_command_and_wait(cluster: LocalCluster) -> None:
    reply = dtf_json("submit", "--command", "echo hello from dtf", "--wait", cluster=cluster)
    [task] = reply["tasks"]
    assert task["status"] == "completed"
    assert "hello from dtf" in task["attempts"][-1]["outcome"]["stdout_tail"]
    assert reply["problems"] == {}


def test_submit_failing_command_waits_and_exits_1(cluster: LocalCluster) -> None:
    result = dtf("submit", "--command", "exit 3", "--max-retries", "0", "--wait", cluster=cluster)
    assert result.returncode == 1
    assert " failed on local-" in result.stdout
    assert "failed:" in result.stdout


def test_test_file_with_failing_test_exits_1_and_names_it(cluster: LocalCluster) -> None:
    result = dtf(
        "submit", "--test-file", str(EXAMPLES / "test_with_failure.py"), "--wait", cluster=cluster
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout
    assert "test_deliberately_fails" in result.stdout


def test_passing_test_file_and_benchmark(cluster: LocalCluster) -> None:
    tests = dtf_json(
        "submit", "--test-file", str(EXAMPLES / "test_sample.py"), "--wait", cluster=cluster
    )
    assert tests["problems"] == {}
    bench = dtf_json(
        "submit",
        "--benchmark",
        str(EXAMPLES / "matmul_bench.py") + ":run",
        *("--param", "batch_size=4", "--param", "size=16", "--param", "repeats=2"),
        "--wait",
        cluster=cluster,
    )
    metrics = bench["tasks"][0]["attempts"][-1]["outcome"]["metrics"]
    assert metrics["batch_size"] == 4
    assert metrics["gflops"] > 0


def test_task_file_with_dependencies_and_labels_then_list_and_show(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    task_file = tmp_path / "tasks.json"
    first = {"id": "cli-first", "type": "command", "config": {"command": "echo first"}}
    second = {**first, "id": "cli-second", "dependencies": ["cli-first"]}
    task_file.write_text(json.dumps({"tasks": [first, second]}))
    reply = dtf_json(
        "submit", "--task-file", str(task_file), "--label", "suite=cli", "--wait", cluster=cluster
    )
    assert [t["id"] for t in reply["tasks"]] == ["cli-first", "cli-second"]
    assert all(t["spec"]["labels"] == {"suite": "cli"} for t in reply["tasks"])
    listed = dtf_json("tasks", "--status", "completed", "--limit", "1000", cluster=cluster)
    assert {"cli-first", "cli-second"} <= {t["id"] for t in listed["tasks"]}
    shown = dtf_json("task", "show", "cli-second", cluster=cluster)
    assert shown["spec"]["dependencies"] == ["cli-first"]
    text = dtf("task", "show", "cli-second", cluster=cluster).stdout
    assert "depends on  cli-first" in text
    assert "attempts" in text
    results = dtf_json("results", "--task", "cli-second", cluster=cluster)["results"]
    assert [r["status"] for r in results] == ["succeeded"]


def test_pending_task_explains_why_and_can_be_cancelled(cluster: LocalCluster) -> None:
    submitted = dtf_json(
        "submit", "--command", "true", "--requires", '{"hardware": ["tpu"]}', cluster=cluster
    )
    [task_id] = submitted["task_ids"]
    text = dtf("task", "show", task_id, cluster=cluster).stdout
    assert "tpu: 0 of 2 workers" in text
    cancelled = dtf_json("task", "cancel", task_id, cluster=cluster)
    assert cancelled["status"] == "cancelled"
    again = dtf("task", "cancel", task_id, cluster=cluster)
    assert again.returncode == 1
    assert "already cancelled" in again.stderr


def test_reject_unsatisfiable_is_refused(cluster: LocalCluster) -> None:
    result = dtf(
        "submit",
        "--command",
        "true",
        "--requires",
        '{"hardware": ["tpu"]}',
        "--reject-unsatisfiable",
        cluster=cluster,
    )
    assert result.returncode == 1
    assert "no live worker can run task" in result.stderr


def test_viewer_key_can_read_but_not_submit(cluster: LocalCluster) -> None:
    key = dtf("keys", "create", "--role", "viewer", "--name", "cli test", cluster=cluster)
    assert key.returncode == 0, key.stderr
    viewer = {"DTF_API_KEY": key.stdout.strip()}
    assert dtf("tasks", cluster=cluster, env=viewer).returncode == 0
    refused = dtf("submit", "--command", "true", cluster=cluster, env=viewer)
    assert refused.returncode == 1
    assert "this key's role may not do that" in refused.stderr


def test_unknown_task_is_one_line_error(cluster: LocalCluster) -> None:
    result = dtf("task", "show", "no-such-task", cluster=cluster)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: task 'no-such-task' does not exist; list tasks with `dtf tasks`"
    )


def test_client_talks_to_the_cluster_with_a_dead_url_first(cluster: LocalCluster) -> None:
    dead = f"http://127.0.0.1:{find_free_port()}"
    with Client(f"{dead},{cluster.url}", cluster.admin_key) as client:
        task_id = client.submit({"type": "command", "config": {"command": "true"}})
        [task] = client.wait([task_id], timeout_s=60)
        assert client.url == cluster.url
    assert task["status"] == "completed"


def test_up_starts_everything_and_stops_on_sigint(tmp_path: Path) -> None:
    port = find_free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    argv = [
        sys.executable,
        "-m",
        "dtf.cli",
        "up",
        "--workers",
        "1",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path),
    ]
    up = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_workers(url, (tmp_path / "admin.key"), count=1)
        assert (tmp_path / "logs" / "coordinator.log").is_file()
        assert (tmp_path / "logs" / "worker-local-1.log").is_file()
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, output
    assert f"export DTF_COORDINATOR={url}" in output
    assert f"export DTF_API_KEY=$(cat {tmp_path / 'admin.key'})" in output
    assert "stopped" in output
    result = dtf("status", env={"DTF_COORDINATOR": url})
    assert "cannot reach coordinator" in result.stderr


def test_up_on_a_busy_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = dtf("up", "--port", str(port), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "--port" in result.stderr


def wait_for_workers(url: str, admin_key: Path, count: int) -> None:
    """Until ``count`` workers are online, bounded by 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if admin_key.exists():
            with Client(url, admin_key.read_text().strip(), timeout_s=2) as client:
                try:
                    online = [w for w in client.workers() if w.get("status") == "online"]
                except DtfError:
                    online = []
            if len(online) >= count:
                return
        time.sleep(0.2)
    raise AssertionError(f"{count} workers did not come online at {url} within 60 s")
