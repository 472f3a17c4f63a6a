"""Throughput for bench/failover.py: committed commands/s and end-to-end tasks/s.

Commands: ``concurrency`` loops, each sending ``POST /api/tasks`` with one new
``true`` task (one ``SubmitTasks`` command) after another for ``seconds``, loop
``i`` to ``urls[i % len(urls)]``. A command counts once acknowledged (201): it is
in the journal (SQLite, fsync'd; or the etcd log) and applied. Concurrent
requests let the bus append several commands per journal write. The loops speak
HTTP/1.1 over asyncio streams themselves (``RawPoster``). The log seq
advance over the same time is reported too: it also counts what the
coordinators appended on their own.

Tasks: bench/_dtf.py's ``run_batch`` (batches of 500 through
``POST /api/tasks/batch``, clock stopped when ``POST /api/tasks/wait`` says all
completed) after a warm-up batch, against workers that are already online.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy
import psutil
from _dtf import TRUE_TASK, coordinator, run_batch, workers
from _procs import BenchError

from dtf.local.cluster import ClusterError
from dtf.local.ha_cluster import HaCluster

REQUEST_TIMEOUT_S = 10.0


def measure_commands(
    urls: list[str], admin_key: str, seconds: float, concurrency: int, prefix: str
) -> dict[str, Any]:
    """Acknowledged single-task submits per second, ``concurrency`` at a time."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(headers=headers, timeout=REQUEST_TIMEOUT_S) as http:
        seq_before = log_seq(http, urls)
        cpu_before = time.process_time()
        figures = asyncio.run(_hammer(urls, headers, seconds, concurrency, prefix))
        figures["client_cpu_share"] = (time.process_time() - cpu_before) / figures["seconds"]
        seq_after = log_seq(http, urls)
    figures["log_entries_per_s"] = (seq_after - seq_before) / figures["seconds"]
    return figures


def log_seq(http: httpx.Client, urls: list[str]) -> int:
    """The highest applied seq any of ``urls`` reports on ``/health``."""
    seqs = []
    for url in urls:
        with contextlib.suppress(httpx.HTTPError):
            seqs.append(int(http.get(f"{url}/health").json()["journal_seq"]))
    return max(seqs, default=0)


async def _hammer(
    urls: list[str], headers: dict[str, str], seconds: float, concurrency: int, prefix: str
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def one_loop(index: int) -> None:
        poster = await RawPoster.open(urls[index % len(urls)], "/api/tasks", headers)
        number = 0
        try:
            while time.perf_counter() < deadline:
                body = json.dumps({"id": f"{prefix}-{index}-{number}", **TRUE_TASK}).encode()
                sent = time.perf_counter()
                status = await poster.post(body)
                if status == 201:
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors.append(str(status))
                number += 1
        finally:
            await poster.close()

    await asyncio.gather(*(one_loop(index) for index in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "commands": len(latencies),
        "seconds": elapsed,
        "commands_per_s": len(latencies) / elapsed,
        "errors": len(errors),
        "latency_p50_s": float(numpy.percentile(latencies, 50)) if latencies else None,
        "latency_p99_s": float(numpy.percentile(latencies, 99)) if latencies else None,
    }


class RawPoster:
    """POSTs over one kept-alive HTTP/1.1 connection, written by hand: httpx spends
    about 1.5 ms of CPU per request, which on 2 cores would come off the servers."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        self.reader, self.writer, self.head = reader, writer, head

    @classmethod
    async def open(cls, url: str, path: str, headers: dict[str, str]) -> RawPoster:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += ["Content-Type: application/json", "Content-Length: "]
        return cls(reader, writer, "\r\n".join(lines).encode())

    async def post(self, body: bytes) -> int:
        """Send ``body``, read the whole reply; its status code."""
        self.writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise BenchError("a coordinator closed a connection in the commands/s run")
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@contextlib.contextmanager
def node_client(url: str, admin_key: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        yield client


def measure_tasks(
    client: httpx.Client, tasks: int, warm_up: int, timeout_s: float
) -> dict[str, Any]:
    """Tasks/s after a warm-up, and the CPU each role spent per task meanwhile; the
    journal entries per task (each is appended once and, in a cluster, applied by
    every coordinator)."""
    run_batch(client, warm_up, timeout_s)
    before, seq_before = cpu_by_role(), journal_seq(client)
    tasks_per_s, _ = run_batch(client, tasks, timeout_s)
    after, seq_after = cpu_by_role(), journal_seq(client)
    per_task = {
        name: 1000 * (seconds - before.get(name, 0.0)) / tasks
        for name, seconds in sorted(after.items())
    }
    return {
        "tasks_per_s": tasks_per_s,
        "cpu_ms_per_task": per_task,
        "journal_entries_per_task": (seq_after - seq_before) / tasks,
    }


def journal_seq(client: httpx.Client) -> int:
    return int(client.get("/health").json()["journal_seq"])


def cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far by this script and the processes it started, by role.
    A worker's count includes the task processes it has reaped."""
    me = psutil.Process()
    spent = {"this script": float(sum(me.cpu_times()[:2]))}
    for process in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            name = role(process.cmdline())
            spent[name] = spent.get(name, 0.0) + float(sum(process.cpu_times()[:4]))
    return spent


def role(argv: list[str]) -> str:
    if argv and Path(argv[0]).name == "etcd":
        return "etcd"
    if "coordinator" in argv:
        return "coordinators"
    if "worker" in argv or "dtf.worker.reaper" in argv:
        return "workers"
    return "other"


def cluster_tasks(
    cluster: HaCluster, slots: int, tasks: int, warm_up: int, timeout_s: float
) -> dict[str, Any]:
    """Start the cluster's workers with ``slots`` each, run the batches through the first
    node, stop the workers."""
    cluster.start_workers(slots)
    try:
        with node_client(cluster.urls[0], cluster.admin_key) as client:
            try:
                return measure_tasks(client, tasks, warm_up, timeout_s)
            except BenchError as error:
                raise BenchError(f"{error}; workers then: {worker_states(client)}") from error
    finally:
        for process in cluster.worker_processes().values():
            process.stop(timeout_s=10)


def worker_states(client: httpx.Client) -> str:
    """Each worker's status, why, and whether it takes work, as the coordinator says."""
    listed = client.get("/api/workers").json()["workers"]
    return "; ".join(
        f"{w['id']} {w['status']} ({w.get('status_reason')}), takes work: {w.get('takes_work')}"
        for w in listed
    )


def standalone(work_dir: Path, options: Any, prefix: str) -> dict[str, Any]:
    """A standalone coordinator (SQLite journal): commands/s without workers, then
    tasks/s with ``options.workers`` workers of each of ``options.slots`` slots, each
    on a coordinator of its own."""
    figures: dict[str, Any] = {}
    with coordinator(work_dir, "standalone") as single:
        figures["commands"] = measure_commands(
            [single.url], single.admin_key, options.seconds, options.concurrency, prefix
        )

    def tasks(slots: int) -> dict[str, Any]:
        logs = work_dir / f"standalone-workers-{slots}"
        logs.mkdir()
        with (
            coordinator(work_dir, f"standalone-tasks-{slots}") as single,
            workers(single, options.workers, slots, logs),
        ):
            return measure_tasks(
                single.client, options.tasks, options.workers * slots * 2, options.timeout
            )

    figures["tasks"] = each_slot_count(options.slots, tasks)
    return figures


def each_slot_count(
    slot_counts: list[int], measure: Callable[[int], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``measure(slots)`` for each count, by count; one that fails is recorded as its
    error and the others still run."""
    figures: dict[str, dict[str, Any]] = {}
    for slots in slot_counts:
        try:
            figures[str(slots)] = measure(slots)
        except (BenchError, ClusterError) as error:
            figures[str(slots)] = {"error": str(error)}
    return figures
