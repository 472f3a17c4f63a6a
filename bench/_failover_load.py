"""Write loads for bench/failover.py: threads sending one small write after another
and noting when each is acknowledged, so the gap a kill opens can be read off.

- ``AnyCoordinator``: ``dtf.client.Client`` over every coordinator URL; on a
  failed connection or a 503 it moves to the next URL, and whichever coordinator it
  reaches appends the write (any coordinator may append client commands).
- ``LeaderOnly``: sends writes only to the leader, found with
  ``GET /api/cluster/leader`` on the nodes in turn; after a failed write it asks
  again until a leader takes the write.

A write is ``POST /api/tasks`` of a ``true`` command with an id drawn from a pool of
``POOL`` ids per writer: the first pass creates the tasks, later ones are
duplicates, which still go through the log (appended to etcd, applied by every
coordinator) but keep the state the same size over a long run.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from dtf.client import Client
from dtf.errors import DtfError

POOL = 1000
REQUEST_TIMEOUT_S = 5.0
RETRY_PAUSE_S = 0.01
LEADER_RECHECK_S = 0.5


def task_body(writer: str, number: int) -> dict[str, Any]:
    return {
        "id": f"{writer}-{number % POOL:04d}",
        "type": "command",
        "config": {"command": ["true"]},
    }


@dataclass(frozen=True)
class Written:
    """The URL that acknowledged a write, or None and why it failed."""

    url: str | None
    failure: str = ""


class AnyCoordinator:
    """Writes through ``dtf.client.Client`` over every URL (its own failover)."""

    name = "any"

    def __init__(self, urls: Sequence[str], admin_key: str) -> None:
        self._client = Client(urls, admin_key, timeout_s=REQUEST_TIMEOUT_S)

    def write(self, body: dict[str, Any]) -> Written:
        try:
            self._client.submit(body)
        except DtfError as exc:
            return Written(None, type(exc).__name__)
        return Written(self._client.url)

    def close(self) -> None:
        self._client.close()


class LeaderOnly:
    """Writes only to the leader: asks the nodes for it after a failed write and every
    ``LEADER_RECHECK_S`` (any node here would take the write, so without the check a
    leader that stepped down but lives on would keep getting them)."""

    name = "leader-only"

    def __init__(self, urls: Sequence[str], admin_key: str) -> None:
        self._urls = list(urls)
        headers = {"Authorization": f"Bearer {admin_key}"}
        self._http = httpx.Client(headers=headers, timeout=REQUEST_TIMEOUT_S)
        self._leader: str | None = None
        self._checked_at = 0.0

    def write(self, body: dict[str, Any]) -> Written:
        if time.monotonic() - self._checked_at > LEADER_RECHECK_S:
            self._leader = None
        leader = self._leader or self._find_leader()
        if leader is None:
            return Written(None, "no leader")
        try:
            response = self._http.post(f"{leader}/api/tasks", json=body)
        except httpx.HTTPError as exc:
            self._leader = None
            return Written(None, type(exc).__name__)
        if response.status_code != 201:
            self._leader = None
            return Written(None, f"HTTP {response.status_code}")
        return Written(leader)

    def _find_leader(self) -> str | None:
        """The leader URL the first answering node names (None during an election)."""
        for url in self._urls:
            try:
                response = self._http.get(f"{url}/api/cluster/leader")
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                leader = response.json()["leader"]
                self._leader = None if leader is None else str(leader["url"])
                self._checked_at = time.monotonic()
                return self._leader
        return None

    def close(self) -> None:
        self._http.close()


Strategy = AnyCoordinator | LeaderOnly


class Writer:
    """A thread writing through ``strategy`` every ``interval_s`` (after each
    acknowledgement; ``RETRY_PAUSE_S`` after a failure), noting acknowledgement times."""

    def __init__(self, strategy: Strategy, interval_s: float) -> None:
        self.strategy = strategy
        self.name = strategy.name
        self.interval_s = interval_s
        self.serving = ""
        self.failures: Counter[str] = Counter()
        self._acks: list[float] = []
        self._ack_urls: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2 * REQUEST_TIMEOUT_S)

    @property
    def acks(self) -> int:
        with self._lock:
            return len(self._acks)

    def first_ack_after(self, moment: float, excluding: str = "") -> float | None:
        """The monotonic time of the first acknowledgement after ``moment`` by a
        coordinator other than ``excluding`` (a URL), if there is one yet."""
        with self._lock:
            index = bisect.bisect_right(self._acks, moment)
            for acked_at, url in zip(self._acks[index:], self._ack_urls[index:], strict=True):
                if url != excluding:
                    return acked_at
        return None

    def last_ack(self) -> float | None:
        with self._lock:
            return self._acks[-1] if self._acks else None

    def _run(self) -> None:
        number = 0
        while not self._stopping.is_set():
            written = self.strategy.write(task_body(self.name, number))
            url = written.url
            if url is None:
                self.failures[written.failure] += 1
                self._stopping.wait(RETRY_PAUSE_S)
                continue
            with self._lock:
                self._acks.append(time.monotonic())
                self._ack_urls.append(url)
            self.serving = url
            number += 1
            self._stopping.wait(self.interval_s)
        self.strategy.close()


def is_flowing(writers: Sequence[Writer], within_s: float) -> bool:
    """Whether every writer had a write acknowledged in the last ``within_s``."""
    now = time.monotonic()
    return all((last := w.last_ack()) is not None and now - last < within_s for w in writers)
