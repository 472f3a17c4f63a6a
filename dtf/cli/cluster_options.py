"""``dtf coordinator``'s cluster flags: ``--cluster``, ``--etcd``, ``--advertise`` and friends.

``cluster_options`` hands the command one ``cluster`` argument: ``ClusterFlags``,
which turns into ``ClusterSettings`` once the coordinator's host and port are
known, or into None for a standalone coordinator.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dtf.cli.output import with_options

if TYPE_CHECKING:
    from dtf.cluster.settings import ClusterSettings

R = TypeVar("R")


@dataclass(frozen=True)
class ClusterFlags:
    cluster: str | None = None
    etcd: str | None = None
    advertise: str | None = None
    node_id: str | None = None
    ha_config: Path | None = None
    etcd_user: str | None = None
    etcd_password: str | None = None
    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    lease_ttl_s: int | None = None
    max_coordinator_losses: int | None = None

    @property
    def wanted(self) -> bool:
        given = (self.cluster, self.etcd, self.ha_config, self.lease_ttl_s)
        return any(value is not None for value in (*given, self.max_coordinator_losses))

    def settings(self, host: str, port: int) -> ClusterSettings | None:
        """The cluster this coordinator joins, or None to run standalone."""
        if not self.wanted:
            return None
        from dtf.cluster.settings import cluster_settings, host_node_id, load_ha_config

        block = load_ha_config(self.ha_config) if self.ha_config else {}
        overrides = {k: v for k, v in asdict(self).items() if k != "ha_config"}
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return cluster_settings(
            block,
            overrides,
            default_url=f"http://{shown_host}:{port}",
            default_node_id=host_node_id(port),
        )


OPTIONS = [
    click.option(
        "--cluster",
        help="Join the coordinator cluster of this name (needs --etcd); nodes of one "
        "cluster share state through etcd.",
    ),
    click.option(
        "--etcd",
        metavar="URLS",
        help="etcd endpoints, comma-separated, the local member first "
        "(http://127.0.0.1:2379,http://b:2379).",
    ),
    click.option(
        "--advertise",
        metavar="URL",
        help="URL other nodes, workers and clients reach this coordinator at "
        "[default: http://HOST:PORT].",
    ),
    click.option("--node-id", help="This node's name in the cluster [default: HOSTNAME-PORT]."),
    click.option(
        "--ha-config",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="YAML file with a high_availability block (flags override it).",
    ),
    click.option("--etcd-user", help="etcd user name, when etcd has authentication on."),
    click.option(
        "--etcd-password",
        envvar="DTF_ETCD_PASSWORD",
        help="etcd password [env: DTF_ETCD_PASSWORD].",
    ),
    click.option(
        "--etcd-ca",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="CA bundle that signed etcd's server certificates (https:// endpoints).",
    ),
    click.option(
        "--etcd-cert",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Client certificate for etcd's mutual TLS.",
    ),
    click.option(
        "--etcd-key",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Private key of --etcd-cert.",
    ),
    click.option(
        "--leader-lease-ttl",
        "lease_ttl_s",
        type=click.IntRange(1, 30),
        help="Seconds a leader's etcd lease lives without keep-alives [default: 1].",
    ),
    click.option(
        "--max-coordinator-losses",
        type=click.IntRange(0, 100),
        help="Attempts of one task that may end lost with a coordinator node without being "
        "charged to its retries, workers or breakers [default: 3].",
    ),
]

_FIELDS = tuple(ClusterFlags.__dataclass_fields__)


def cluster_options(command: Callable[..., R]) -> Callable[..., R]:
    @functools.wraps(command)
    def with_cluster(*args: Any, **kwargs: Any) -> R:
        flags = ClusterFlags(**{name: kwargs.pop(name) for name in _FIELDS})
        return command(*args, cluster=flags, **kwargs)

    return with_options(with_cluster, OPTIONS)
