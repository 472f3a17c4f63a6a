"""Celery with a Redis broker and result backend: W prefork processes running ``true``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis
from _celery_tasks import app, run_true
from _procs import BenchError, free_port, running, wait_until
from celery import group

BENCH_DIR = Path(__file__).resolve().parent
APT_HINT = "install it with `apt-get install redis-server`"


def measure_celery(workers: int, tasks: int, work_dir: Path, timeout_s: float) -> float:
    """Tasks per second from the first send until every result is back."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise BenchError(f"redis-server is not on PATH; {APT_HINT}")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis_command = [redis_server, "--bind", "127.0.0.1", "--port", str(port)]
    redis_command += ["--save", "", "--appendonly", "no", "--dir", str(work_dir)]
    with running(redis_command, work_dir / "redis.log") as redis_process:
        wait_until(
            lambda: redis_ping(url),
            timeout_s=30,
            interval_s=0.05,
            what="redis-server",
            processes=[(redis_process, work_dir / "redis.log")],
        )
        with running(
            worker_command(url, workers), work_dir / "celery.log", cwd=BENCH_DIR
        ) as worker:
            return run_tasks(url, tasks, timeout_s, (worker, work_dir / "celery.log"))


def worker_command(url: str, workers: int) -> list[str]:
    celery = [sys.executable, "-m", "celery", "-A", "_celery_tasks", "-b", url]
    options = ["--pool", "prefork", "-c", str(workers), "--loglevel", "warning"]
    options += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return [*celery, "--result-backend", url, "worker", *options]


def redis_ping(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1) as connection:
            return bool(connection.ping())
    except redis.ConnectionError:
        return False


def run_tasks(
    url: str, tasks: int, timeout_s: float, worker: tuple[subprocess.Popen[bytes], Path]
) -> float:
    app.conf.update(broker_url=url, result_backend=url)
    try:
        wait_until(
            lambda: bool(app.control.ping(timeout=0.5)),
            timeout_s=60,
            interval_s=0.1,
            what="the Celery worker to answer a ping",
            processes=[worker],
        )
        group(run_true.s() for _ in range(4)).apply_async().get(timeout=timeout_s)
        started = time.perf_counter()
        group(run_true.s() for _ in range(tasks)).apply_async().get(timeout=timeout_s)
        return tasks / (time.perf_counter() - started)
    finally:
        app.close()
