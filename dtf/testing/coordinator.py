"""A standalone ``dtf coordinator`` process for integration tests, on a free loopback
port with its own data directory, stopped however the test ends.

    with running_coordinator(tmp_path, "--lease-timeout", "2") as (process, client):
        ...
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

from dtf.client import Client
from dtf.errors import DtfError
from dtf.local.processes import ManagedProcess, find_free_port, start_process
from dtf.testing.fleet import dtf_argv
from dtf.testing.waiting import wait_for

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


@contextlib.contextmanager
def running_coordinator(directory: Path, *args: str) -> Iterator[tuple[ManagedProcess, Client]]:
    """Start it with ``args`` added to its command line and wait until it answers
    ``/health``; the client holds its admin key. A test may have stopped it with
    SIGSTOP: it is continued before it is stopped."""
    key, port = secrets.token_urlsafe(16), find_free_port()
    argv = dtf_argv("coordinator", "--port", str(port), "--data-dir", str(directory / "data"))
    argv += ["--log-level", "warning", *args]
    env = {**os.environ, "DTF_ADMIN_KEY": key}
    process = start_process("coordinator", argv, directory / "coordinator.log", env)
    try:
        with Client(f"http://127.0.0.1:{port}", key, timeout_s=5.0) as client:
            wait_for(lambda: is_healthy(client), START_TIMEOUT_S, "the coordinator to answer")
            yield process, client
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
        process.stop(STOP_TIMEOUT_S)


def is_healthy(client: Client) -> bool:
    try:
        return client.health()
    except DtfError:  # not up yet
        return False
