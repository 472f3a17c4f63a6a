"""dtf end to end: a real coordinator and W real worker processes on loopback.

Talks to the REST API with raw httpx, so it measures what any client sees.
Latencies come from the coordinator's own timestamps (``submitted_at`` and the
last attempt's ``started_at`` / ``finished_at``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy
from _procs import BenchError, free_port, running, wait_until

DTF = str(Path(sys.executable).parent / "dtf")
TRUE_TASK = {"type": "command", "config": {"command": ["true"]}}
SUBMIT_BATCH = 500
LONG_POLL_S = 5.0
IDLE_POLL_INTERVAL_S = 0.01
IDLE_SAMPLES = 200
BIG_BATCH = 10_000
BIG_BATCH_REPEATS = 3
TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclasses.dataclass(frozen=True)
class Coordinator:
    url: str
    admin_key: str
    client: httpx.Client


@contextlib.contextmanager
def coordinator(work_dir: Path, name: str) -> Iterator[Coordinator]:
    """A coordinator on a free port with a fresh data dir, and an admin client."""
    admin_key = secrets.token_urlsafe(24)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [DTF, "coordinator", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--data-dir", str(work_dir / f"{name}-data"), "--log-level", "warning"]
    log_path = work_dir / f"{name}.log"
    env = {**os.environ, "DTF_ADMIN_KEY": admin_key}
    with (
        running(command, log_path, env=env) as process,
        httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {admin_key}"},
            timeout=120,
        ) as client,
    ):
        wait_until(
            lambda: is_healthy(client),
            timeout_s=60,
            interval_s=0.05,
            what=f"the coordinator on port {port}",
            processes=[(process, log_path)],
        )
        yield Coordinator(url, admin_key, client)


def is_healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def workers(cluster: Coordinator, count: int, slots: int, work_dir: Path) -> Iterator[None]:
    """``count`` worker processes, yielding once all are listed online."""
    with contextlib.ExitStack() as stack:
        started = []
        for index in range(count):
            command = [DTF, "worker", "--coordinator", cluster.url]
            command += ["--api-key", cluster.admin_key, "--slots", str(slots)]
            command += ["--worker-id", f"bench-{index}", "--log-level", "warning"]
            log_path = work_dir / f"worker-{index}.log"
            started.append((stack.enter_context(running(command, log_path)), log_path))
        wait_until(
            lambda: online_workers(cluster.client) >= count,
            timeout_s=60,
            interval_s=0.1,
            what=f"{count} workers online",
            processes=started,
        )
        yield


def online_workers(client: httpx.Client) -> int:
    listed = checked(client.get("/api/workers"))["workers"]
    return sum(1 for worker in listed if worker.get("status", "online") == "online")


def checked(response: httpx.Response) -> Any:
    if response.is_error:
        raise BenchError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text[:500]}"
        )
    return response.json()


def submit(client: httpx.Client, count: int) -> list[str]:
    reply = checked(client.post("/api/tasks/batch", json={"tasks": [TRUE_TASK] * count}))
    return [str(entry["task_id"]) for entry in reply["tasks"]]


def run_batch(client: httpx.Client, tasks: int, timeout_s: float) -> tuple[float, list[str]]:
    """Submit ``tasks`` in batches, then hold ``POST /api/tasks/wait`` requests until
    all finished (the coordinator answers the moment they have): (tasks/s, ids)."""
    started = time.perf_counter()
    task_ids = []
    for offset in range(0, tasks, SUBMIT_BATCH):
        task_ids += submit(client, min(SUBMIT_BATCH, tasks - offset))
    deadline = time.monotonic() + timeout_s
    while not (reply := wait_for_tasks(client, task_ids))["done"]:
        if time.monotonic() > deadline:
            raise BenchError(f"{tasks} tasks not finished after {timeout_s:g} s: {reply['counts']}")
    elapsed = time.perf_counter() - started
    if reply["counts"] != {"completed": tasks}:
        raise BenchError(f"not every benchmark task completed: {reply['counts']}")
    return tasks / elapsed, task_ids


def wait_for_tasks(client: httpx.Client, task_ids: list[str]) -> Any:
    body = {"task_ids": task_ids, "timeout_s": LONG_POLL_S}
    return checked(client.post("/api/tasks/wait", json=body))


def latencies(task: dict[str, Any]) -> tuple[float, float]:
    """(submit→start, submit→done) in seconds for a finished task."""
    attempt = task["attempts"][-1]
    submitted_at = float(task["submitted_at"])
    return attempt["started_at"] - submitted_at, attempt["finished_at"] - submitted_at


def batch_latencies(client: httpx.Client, task_ids: list[str]) -> list[tuple[float, float]]:
    wanted = set(task_ids)
    params: dict[str, str | int] = {"limit": 100_000, "order": "asc", "status": "completed"}
    listed = checked(client.get("/api/tasks", params=params))["tasks"]
    return [latencies(task) for task in listed if task["id"] in wanted]


def idle_latencies(client: httpx.Client, samples: int) -> list[tuple[float, float]]:
    """One task at a time to idle workers, each awaited before the next."""
    measured = []
    for _ in range(samples):
        (task_id,) = submit(client, 1)
        task = finished_task(client, task_id, timeout_s=60)
        if task["status"] != "completed":
            raise BenchError(f"idle-latency task {task_id} ended {task['status']}: {task}")
        measured.append(latencies(task))
    return measured


def finished_task(client: httpx.Client, task_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task: dict[str, Any] = checked(client.get(f"/api/tasks/{task_id}"))
        if task["status"] in TERMINAL:
            return task
        time.sleep(IDLE_POLL_INTERVAL_S)
    raise BenchError(f"task {task_id} did not finish within {timeout_s:g} s")


def percentiles(samples: list[tuple[float, float]]) -> dict[str, dict[str, float]]:
    to_start = numpy.array([start for start, _ in samples])
    to_done = numpy.array([done for _, done in samples])
    return {
        "submit_to_start_s": {
            "p50": float(numpy.percentile(to_start, 50)),
            "p99": float(numpy.percentile(to_start, 99)),
        },
        "submit_to_done_s": {
            "p50": float(numpy.percentile(to_done, 50)),
            "p99": float(numpy.percentile(to_done, 99)),
        },
    }


def measure_dtf(
    worker_count: int, slots: int, tasks: int, work_dir: Path, timeout_s: float
) -> dict[str, Any]:
    """Throughput and latency under load, then idle latency, on one cluster."""
    with (
        coordinator(work_dir, "coordinator") as cluster,
        workers(cluster, worker_count, slots, work_dir),
    ):
        client = cluster.client
        run_batch(client, worker_count * slots * 2, timeout_s)
        tasks_per_s, task_ids = run_batch(client, tasks, timeout_s)
        loaded = batch_latencies(client, task_ids)
        idle = idle_latencies(client, IDLE_SAMPLES)
    return {
        "tasks_per_s": tasks_per_s,
        "under_load": percentiles(loaded),
        "idle": percentiles(idle),
        "idle_samples": len(idle),
    }


def measure_big_submit(work_dir: Path) -> dict[str, float]:
    """Client-measured time of one 10,000-task batch request, no workers: median of 3."""
    with coordinator(work_dir, "submit-only") as cluster:
        client = cluster.client
        submit(client, 10)
        durations = []
        for _ in range(BIG_BATCH_REPEATS):
            started = time.perf_counter()
            submitted = submit(client, BIG_BATCH)
            durations.append(time.perf_counter() - started)
            if len(submitted) != BIG_BATCH:
                raise BenchError(f"submitted {BIG_BATCH} tasks, the reply listed {len(submitted)}")
    median_s = statistics.median(durations)
    return {"tasks": BIG_BATCH, "median_s": median_s, "tasks_per_s": BIG_BATCH / median_s}
