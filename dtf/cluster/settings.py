"""How a coordinator joins a cluster: from flags or the YAML ``high_availability`` block.

A file like::

    high_availability:
      cluster: prod
      node_id: coord-a
      advertise_url: http://10.0.0.5:8080
      lease_ttl_s: 1
      max_coordinator_losses: 3
      etcd:
        endpoints: [https://10.0.0.5:2379, https://10.0.0.6:2379, https://10.0.0.7:2379]
        user: dtf
        password_env: DTF_ETCD_PASSWORD
        ca_file: /etc/dtf/etcd-ca.pem
        cert_file: /etc/dtf/etcd-client.pem
        key_file: /etc/dtf/etcd-client-key.pem

Flags given on the command line override the file's values.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from dtf.cluster.etcd import EtcdSettings
from dtf.errors import InvalidRequest

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAX_LEASE_TTL_S = 30
MAX_COORDINATOR_LOSSES = 100


@dataclass(frozen=True)
class ClusterSettings:
    name: str
    node_id: str
    advertise_url: str
    etcd: EtcdSettings
    lease_ttl_s: int = 1
    max_coordinator_losses: int = 3

    def __post_init__(self) -> None:
        for what, value in (("cluster name", self.name), ("node id", self.node_id)):
            if not NAME_PATTERN.match(value):
                raise InvalidRequest(
                    f"{what} {value!r} must be 1-63 letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit",
                    field="cluster",
                )
        parts = urlsplit(self.advertise_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidRequest(
                f"advertise URL {self.advertise_url!r} must be the http(s):// URL other "
                "coordinators, workers and clients reach this node at, e.g. http://10.0.0.5:8080",
                field="advertise_url",
            )
        if not 1 <= self.lease_ttl_s <= MAX_LEASE_TTL_S:
            raise InvalidRequest(
                f"leader lease TTL {self.lease_ttl_s} s is outside 1..{MAX_LEASE_TTL_S} s; "
                "1 or 2 s gives fast failover",
                field="lease_ttl_s",
            )
        if not 0 <= self.max_coordinator_losses <= MAX_COORDINATOR_LOSSES:
            raise InvalidRequest(
                f"max_coordinator_losses {self.max_coordinator_losses} is outside "
                f"0..{MAX_COORDINATOR_LOSSES}; it is how many attempts of one task may end "
                "lost with a coordinator node without being charged (default 3)",
                field="max_coordinator_losses",
            )


def load_ha_config(path: Path) -> dict[str, Any]:
    """The ``high_availability`` mapping of a YAML file, or an empty one."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidRequest(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"config {path} is not valid YAML: {exc}") from None
    block = (data or {}).get("high_availability") if isinstance(data, dict) else None
    if block is None:
        raise InvalidRequest(f"config {path} has no 'high_availability' mapping")
    if not isinstance(block, dict):
        raise InvalidRequest(f"'high_availability' in {path} must be a mapping")
    return block


def cluster_settings(
    block: dict[str, Any], overrides: dict[str, Any], *, default_url: str, default_node_id: str
) -> ClusterSettings:
    """Settings from a config block with flag ``overrides`` (None values ignored)."""
    etcd_block = dict(block.get("etcd") or {})
    given = {key: value for key, value in overrides.items() if value is not None}
    endpoints = given.pop("etcd", None) or etcd_block.get("endpoints")
    if not endpoints:
        raise InvalidRequest(
            "a cluster needs etcd: pass --etcd http://127.0.0.1:2379[,...] "
            "or set high_availability.etcd.endpoints",
            field="etcd",
        )
    etcd = EtcdSettings.parse(
        endpoints if isinstance(endpoints, str) else ",".join(endpoints),
        user=given.pop("etcd_user", None) or etcd_block.get("user"),
        password=given.pop("etcd_password", None) or _password(etcd_block),
        ca_file=_path(given.pop("etcd_ca", None) or etcd_block.get("ca_file")),
        cert_file=_path(given.pop("etcd_cert", None) or etcd_block.get("cert_file")),
        key_file=_path(given.pop("etcd_key", None) or etcd_block.get("key_file")),
    )
    name = given.pop("cluster", None) or block.get("cluster") or "dtf"
    return ClusterSettings(
        name=str(name),
        node_id=str(given.pop("node_id", None) or block.get("node_id") or default_node_id),
        advertise_url=str(
            given.pop("advertise", None) or block.get("advertise_url") or default_url
        ),
        etcd=etcd,
        lease_ttl_s=_number("lease_ttl_s", given, block, default=1),
        max_coordinator_losses=_number("max_coordinator_losses", given, block, default=3),
    )


def _number(key: str, given: dict[str, Any], block: dict[str, Any], *, default: int) -> int:
    """The flag's value if given, else the block's, else ``default``."""
    value = given.pop(key) if key in given else block.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{key} {value!r} is not a whole number", field=key) from None


def _password(etcd_block: dict[str, Any]) -> str | None:
    env = etcd_block.get("password_env")
    if env:
        value = os.environ.get(str(env))
        if value is None:
            raise InvalidRequest(f"environment variable {env} (etcd password) is not set")
        return value
    password = etcd_block.get("password")
    return None if password is None else str(password)


def _path(value: Any) -> Path | None:
    return None if value in (None, "") else Path(str(value)).expanduser()


def host_node_id(port: int) -> str:
    """``<short host name>-<port>``: unique per coordinator on one machine."""
    host = os.uname().nodename.split(".")[0] or "node"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", host)[:56] + f"-{port}"
