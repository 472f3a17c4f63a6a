"""A network namespace joined to this machine's own by a veth pair, for partition tests.

How this works: ``Namespace.create`` (root or CAP_NET_ADMIN) makes a namespace and a
veth pair carrying a private /30 picked from 10.231.0.0/16 (host side ``.1``,
namespace side ``.2``). Processes started through ``wrap(argv)`` live in the namespace,
where 127.0.0.1 is the namespace's own loopback and the pair is the only way out.
``cut`` takes the namespace's end of the pair down, as if its cable were pulled: the
host keeps its route to the /30 (marked linkdown) and its packets there are dropped,
so connections stall as in a real partition, while each side still reaches itself;
``heal`` brings the end back up. A blackhole route for the /30 (of lower priority than
the pair's own) keeps packets on this machine should the host side lose that route:
without it they would follow the default route off the machine. ``delete`` removes the
namespace, the pair and the blackhole route.

Servers on the host listen on 127.0.0.1; a ``TcpRelay`` on the host side address
forwards connections from the namespace to one of them, so what the namespace
reaches is cut with the link.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from dtf.errors import DtfError

logger = logging.getLogger(__name__)

SUBNETS = ipaddress.IPv4Network("10.231.0.0/16")
IP_TIMEOUT_S = 10.0
RELAY_BUFFER_BYTES = 65536
BLACKHOLE_METRIC = "4000"


class NetnsUnavailable(DtfError):
    status_code = 500


def ip(*args: str) -> str:
    """Run ``ip ARGS``; ``NetnsUnavailable`` with its error output when it fails."""
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


def netns_problem() -> str | None:
    """Why this process cannot make network namespaces (None: it can)."""
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    probe = f"dtf-probe-{uuid.uuid4().hex[:8]}"
    try:
        ip("netns", "add", probe)
    except NetnsUnavailable as exc:
        return f"{exc.message}; partition tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    ip("netns", "del", probe)
    return None


def require_netns() -> None:
    """In a test: skip it, saying why, where network namespaces cannot be made."""
    import pytest

    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespaces not permitted here: {problem}")


@dataclass
class Namespace:
    name: str
    host_veth: str
    inner_veth: str
    host_address: str
    address: str

    @classmethod
    def create(cls) -> Namespace:
        """A new namespace, its veth pair up and addressed, its loopback up."""
        token = uuid.uuid4().hex[:8]
        network = _free_subnet()
        host_address, address = (str(host) for host in network.hosts())
        namespace = cls(f"dtf-{token}", f"dtf{token}h", f"dtf{token}n", host_address, address)
        try:
            namespace._build(network.prefixlen)
        except BaseException:
            namespace.delete()
            raise
        return namespace

    @property
    def network(self) -> str:
        return str(ipaddress.ip_interface(f"{self.host_address}/30").network)

    def _build(self, prefix_length: int) -> None:
        ip("route", "add", "blackhole", self.network, "metric", BLACKHOLE_METRIC)
        ip("netns", "add", self.name)
        ip("link", "add", self.host_veth, "type", "veth", "peer", "name", self.inner_veth)
        ip("link", "set", self.inner_veth, "netns", self.name)
        ip("addr", "add", f"{self.host_address}/{prefix_length}", "dev", self.host_veth)
        ip("link", "set", self.host_veth, "up")
        inside = ("netns", "exec", self.name, "ip")
        ip(*inside, "addr", "add", f"{self.address}/{prefix_length}", "dev", self.inner_veth)
        ip(*inside, "link", "set", self.inner_veth, "up")
        ip(*inside, "link", "set", "lo", "up")

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        ip("netns", "exec", self.name, "ip", "link", "set", self.inner_veth, "down")
        logger.info("namespace %s cut off", self.name)

    def heal(self) -> None:
        ip("netns", "exec", self.name, "ip", "link", "set", self.inner_veth, "up")
        logger.info("namespace %s joined again", self.name)

    def delete(self) -> None:
        """Remove the namespace, the veth pair and the blackhole route; safe to call on a
        half-built one."""
        for args in (
            ("netns", "del", self.name),
            ("link", "del", self.host_veth),
            ("route", "del", "blackhole", self.network, "metric", BLACKHOLE_METRIC),
        ):
            with contextlib.suppress(NetnsUnavailable):
                ip(*args)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 of ``SUBNETS`` that no interface of this machine uses."""
    used = [
        ipaddress.ip_interface(line.split()[3]).network
        for line in ip("-4", "-o", "addr", "show").splitlines()
    ]
    candidates = list(SUBNETS.subnets(new_prefix=30))
    for network in random.sample(candidates, 50):
        if not any(network.overlaps(other) for other in used):
            return network
    raise NetnsUnavailable(f"no free /30 left in {SUBNETS}")


class TcpRelay:
    """Forwards every connection to ``listen_host:port`` to ``127.0.0.1:port``, one
    thread per direction, until ``close``."""

    def __init__(self, listen_host: str, port: int) -> None:
        self.port = port
        self.server = socket.create_server((listen_host, port))
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, name=f"relay-{port}", daemon=True).start()

    def close(self) -> None:
        self.closed = True
        self.server.close()
        with self.lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                incoming, _ = self.server.accept()
            except OSError:
                continue
            try:
                outgoing = socket.create_connection(("127.0.0.1", self.port))
            except OSError:  # the server is down: the client sees its connection closed
                incoming.close()
                continue
            with self.lock:
                self.connections += [incoming, outgoing]
            for source, target in ((incoming, outgoing), (outgoing, incoming)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy ``source`` to ``target`` until either ends, then shut both down."""
    try:
        while data := source.recv(RELAY_BUFFER_BYTES):
            target.sendall(data)
    except OSError:
        pass
    for end in (source, target):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
