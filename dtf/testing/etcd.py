"""Real etcd members on loopback, for integration tests, the failover benchmark and
``dtf cluster local``::

    with EtcdCluster(tmp_path / "etcd", size=3) as cluster:
        cluster.wait_healthy(10.0)
        etcd = await Etcd.connect(cluster.settings())
        cluster.kill(await cluster.leader_index())

Members are named ``m0``..``m<n-1>``, listen on free 127.0.0.1 ports outside the kernel's
ephemeral range (so a killed member's port is still free when it restarts), keep their data
in ``<directory>/m<i>`` and write their logs to ``<directory>/m<i>.log``. Raft timings are
tuned for 1 s leases: heartbeat 50 ms, election timeout 500 ms.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar
from uuid import uuid4

import httpx

from dtf.cluster.etcd import Etcd, EtcdMember, EtcdSettings, EtcdUnavailable
from dtf.errors import DtfError

HEARTBEAT_MS = 50
ELECTION_TIMEOUT_MS = 500
PORT_RANGE = range(20000, 32000)
STOP_GRACE_S = 2.0
KILL_WAIT_S = 5.0
MISSING_ETCD = (
    "etcd is not installed (no `etcd` on PATH): install it with "
    "`apt-get install etcd-server` (Debian/Ubuntu) or take a release from "
    "https://github.com/etcd-io/etcd/releases and put its `etcd` on PATH"
)


class EtcdMissing(DtfError):
    status_code = 500


def find_etcd() -> str:
    """The path of the ``etcd`` binary; ``EtcdMissing`` says how to install it."""
    path = shutil.which("etcd")
    if path is None:
        raise EtcdMissing(MISSING_ETCD)
    return path


def require_etcd() -> str:
    """In a test: the ``etcd`` binary's path, or skip the test saying how to install it."""
    import pytest

    path = shutil.which("etcd")
    if path is None:
        pytest.skip(MISSING_ETCD)
    return path


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that 127.0.0.1 can bind now, outside the ephemeral range."""
    ports: list[int] = []
    for candidate in random.sample(PORT_RANGE, 20 * count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
        ports.append(candidate)
        if len(ports) == count:
            return ports
    raise EtcdUnavailable(f"found only {len(ports)} of {count} free ports in {PORT_RANGE}")


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class EtcdCluster:
    """``size`` etcd members started and stopped as one; a context manager."""

    def __init__(
        self,
        directory: Path,
        size: int = 1,
        *,
        compaction_retention_revisions: int = 100_000,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``extra_args`` go to every member's command line, e.g. ``("--auth-token-ttl", "1")``;
        ``env`` is added to this process's environment for every member, restarted ones too."""
        self._binary = find_etcd()
        self._directory = directory
        self._retention = compaction_retention_revisions
        self._extra_args = tuple(extra_args)
        self.env = env
        self._token = f"dtf-{uuid4().hex[:12]}"
        ports = free_ports(2 * size)
        self._members = [
            Member(
                name=f"m{index}",
                client_port=ports[2 * index],
                peer_port=ports[2 * index + 1],
                data_dir=directory / f"m{index}",
                log_file=directory / f"m{index}.log",
            )
            for index in range(size)
        ]

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def client_urls(self) -> list[str]:
        return [member.client_url for member in self._members]

    @property
    def endpoints(self) -> str:
        """The client URLs comma-separated, as ``--etcd`` takes them."""
        return ",".join(self.client_urls)

    def settings(self, timeout_s: float = 2.0) -> EtcdSettings:
        return EtcdSettings(endpoints=tuple(self.client_urls), timeout_s=timeout_s)

    def log_file(self, index: int) -> Path:
        return self._members[index].log_file

    def is_running(self, index: int) -> bool:
        return self._members[index].is_running

    def start(self) -> None:
        """Start every member that is not running."""
        self._directory.mkdir(parents=True, exist_ok=True)
        for index, member in enumerate(self._members):
            if not member.is_running:
                self._spawn(index)

    def stop(self) -> None:
        """Stop every member (SIGTERM, SIGKILL after 2 s) and reap it.

        A member whose peers died can spend seconds trying to hand its leadership over;
        its data is safe on disk either way.
        """
        for member in self._members:
            if member.is_running and member.process is not None:
                member.process.send_signal(signal.SIGCONT)  # a paused member cannot stop
                member.process.send_signal(signal.SIGTERM)
        for member in self._members:
            _reap(member)

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` (no clean shutdown) and reap it."""
        member = self._members[index]
        if member.is_running and member.process is not None:
            member.process.kill()
        _reap(member)

    def pause(self, index: int) -> None:
        """SIGSTOP member ``index``: its connections stay open and nothing answers on them,
        as when its machine hangs. ``resume`` lets it go on; ``stop`` and ``kill`` work."""
        member = self._members[index]
        if member.is_running and member.process is not None:
            member.process.send_signal(signal.SIGSTOP)

    def resume(self, index: int) -> None:
        """SIGCONT member ``index`` after ``pause``."""
        member = self._members[index]
        if member.is_running and member.process is not None:
            member.process.send_signal(signal.SIGCONT)

    def restart(self, index: int) -> None:
        """Start member ``index`` again on its data dir and ports, killing it first if running."""
        self.kill(index)
        self._spawn(index)

    def wait_healthy(self, timeout_s: float = 10.0) -> None:
        """Return once every running member reports healthy (it has a leader and serves)."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=1.0) as http:
            while True:
                sick = [member for member in self._running() if not _is_healthy(http, member)]
                if not sick:
                    return
                if time.monotonic() >= deadline:
                    names = ", ".join(f"{m.name} (log: {m.log_file})" for m in sick)
                    raise EtcdUnavailable(f"etcd members not healthy after {timeout_s}s: {names}")
                time.sleep(0.05)

    async def leader_index(self) -> int:
        """The index of the member etcd's reachable members follow as their leader."""
        etcd = await Etcd.connect(self.settings())
        try:
            members = await etcd.members()
        finally:
            await etcd.close()
        index = self.leader_among(members)
        if index is None:
            raise EtcdUnavailable(f"etcd at {etcd.endpoint} knows no leader")
        return index

    def leader_among(self, members: list[EtcdMember]) -> int | None:
        """The index of the member marked leader in an ``Etcd.members`` answer, if any."""
        names = [member["name"] for member in members if member["is_leader"]]
        return [member.name for member in self._members].index(names[0]) if names else None

    def _running(self) -> list[Member]:
        for member in self._members:
            if member.process is not None and not member.is_running:
                raise EtcdUnavailable(
                    f"etcd member {member.name} exited with {member.process.returncode}; "
                    f"see {member.log_file}"
                )
        return [member for member in self._members if member.is_running]

    def _spawn(self, index: int) -> None:
        member = self._members[index]
        member.data_dir.mkdir(parents=True, exist_ok=True)
        # etcd reads ETCD_* variables as flags and refuses a flag given twice.
        inherited = {**os.environ, **(self.env or {})}
        environment = {k: v for k, v in inherited.items() if not k.startswith("ETCD")}
        with member.log_file.open("ab") as log:
            member.process = subprocess.Popen(
                self._command(member),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )

    def _command(self, member: Member) -> list[str]:
        peers = ",".join(f"{other.name}={other.peer_url}" for other in self._members)
        return [
            self._binary,
            *("--name", member.name, "--data-dir", str(member.data_dir)),
            *("--listen-client-urls", member.client_url),
            *("--advertise-client-urls", member.client_url),
            *("--listen-peer-urls", member.peer_url),
            *("--initial-advertise-peer-urls", member.peer_url),
            *("--initial-cluster", peers, "--initial-cluster-state", "new"),
            *("--initial-cluster-token", self._token),
            *("--heartbeat-interval", str(HEARTBEAT_MS)),
            *("--election-timeout", str(ELECTION_TIMEOUT_MS)),
            *("--auto-compaction-mode", "revision"),
            *("--auto-compaction-retention", str(self._retention)),
            *self._extra_args,
        ]


def _reap(member: Member) -> None:
    process = member.process
    if process is None:
        return
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=KILL_WAIT_S)
    member.process = None


def _is_healthy(http: httpx.Client, member: Member) -> bool:
    try:
        response = http.get(f"{member.client_url}/health")
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json().get("health") == "true"


T = TypeVar("T")
SCENARIO_TIMEOUT_S = 60.0


def run_on_etcd(
    settings: EtcdSettings,
    scenario: Callable[[Etcd], Awaitable[T]],
    *,
    timeout_s: float = SCENARIO_TIMEOUT_S,
) -> T:
    """Connect an adapter, run ``scenario`` on it within ``timeout_s``, close it."""

    async def main() -> T:
        etcd = await Etcd.connect(settings)
        try:
            return await asyncio.wait_for(scenario(etcd), timeout_s)
        finally:
            await etcd.close()

    return asyncio.run(main())
