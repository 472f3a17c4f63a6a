"""``dtf cluster local``: etcd members, a coordinator cluster and workers on this machine,
to try high availability out (the seeds' ``run_high_availability_cluster.sh``).

It runs until SIGINT or SIGTERM. With ``--fault-injection`` it kills the leader
coordinator now and then and says how long the cluster took to elect another;
with ``--json-events`` it prints one JSON object per line for each event instead.
"""

from __future__ import annotations

import json
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from dtf.cli.output import console, error_console
from dtf.cli.serve import LOG_LEVELS

if TYPE_CHECKING:
    from dtf.local.ha_cluster import HaCluster

Record = dict[str, Any]
MISSING_ETCD_EXIT_CODE = 2
PRODUCTION_ETCD = "production should run etcd 3.5 or newer"


class EventPrinter:
    """Prints each event as one JSON line (``as_json``) or as text, one thread at a time."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.lock = threading.Lock()

    def __call__(self, kind: str, fields: Record) -> None:
        with self.lock:
            if self.as_json:
                click.echo(json.dumps({"event": kind, "at": round(time.time(), 3), **fields}))
            else:
                self.show(kind, fields)

    def show(self, kind: str, fields: Record) -> None:
        if kind == "started":
            show_started(fields)
        elif kind == "leader_killed":
            console.print(
                f"[magenta]fault injection: killed leader {fields['node_id']} "
                f"(epoch {fields['epoch']}, pid {fields['pid']})[/magenta]"
            )
        elif kind == "leader_elected":
            console.print(
                f"[green]{fields['node_id']} leads (epoch {fields['epoch']}), "
                f"{fields['failover_s']:.2f}s after {fields['previous_node_id']} was killed[/green]"
            )
        elif kind == "notice":
            console.print(f"[yellow]{escape(fields['text'])}[/yellow]", soft_wrap=True)
        elif kind == "stopped":
            console.print("stopped")
        # node_restarted: the supervisor's notice has already said it in words.


def show_started(fields: Record) -> None:
    table = Table("node", "URL", "role", "etcd member", "data dir", title=nodes_title(fields))
    for node in fields["nodes"]:
        role = "[bold]leader[/bold]" if node["role"] == "leader" else node["role"]
        member = f"{node['etcd_member']} {node['etcd_url']}"
        table.add_row(node["node_id"], node["url"], role, member, node["data_dir"])
    console.print(table)
    for line in usage_lines(fields):
        console.print(line, markup=False, soft_wrap=True)


def nodes_title(fields: Record) -> str:
    count = len(fields["nodes"])
    return f"cluster {fields['cluster']}: {count} coordinators on {count} etcd members"


def usage_lines(fields: Record) -> list[str]:
    workers = ", ".join(worker["worker_id"] for worker in fields["workers"]) or "none"
    every_s = fields["fault_injection_every_s"]
    return [
        f"workers      {workers} (each given every coordinator URL)",
        f"admin key    {fields['admin_key']} (also in {fields['admin_key_file']})",
        f"logs         {fields['logs_dir']}",
        *([f"faults       the leader coordinator is killed every {every_s:g}s"] if every_s else []),
        "",
        "In another terminal:",
        f"  export DTF_COORDINATOR={','.join(fields['urls'])}",
        f"  export DTF_API_KEY={fields['admin_key']}",
        "  dtf cluster status",
        '  dtf submit --command "echo hello" --wait',
        "  dtf cluster leader   # leadership history",
        "Ctrl-C stops workers, coordinators, then etcd.",
    ]


def stop_on_signals(stopping: threading.Event, printer: EventPrinter) -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not printer.as_json:
            name = signal.Signals(signum).name
            console.print(f"\n{name} received: stopping workers, coordinators, then etcd")
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def require_etcd() -> None:
    """Exit with code 2, saying how to install etcd, when there is none on PATH."""
    from dtf.testing.etcd import EtcdMissing, find_etcd

    try:
        find_etcd()
    except EtcdMissing as exc:
        error_console.print(f"{exc.message}; {PRODUCTION_ETCD}", markup=False, soft_wrap=True)
        click.get_current_context().exit(MISSING_ETCD_EXIT_CODE)


def run(cluster: HaCluster, printer: EventPrinter) -> None:
    """Start everything, then wait for a signal; stop everything whatever happens."""
    from dtf.local.cluster import ClusterError

    settings = cluster.settings
    what = (
        f"{settings.nodes} etcd members, {settings.nodes} coordinators, {settings.workers} workers"
    )
    try:
        if printer.as_json:
            cluster.start()
        else:
            with console.status(f"starting {what}..."):
                cluster.start()
        while not cluster.stopping.wait(1.0):
            pass
    except ClusterError:
        if not cluster.stopping.is_set():
            raise
    finally:
        cluster.stop()


@click.command("local")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0, 64))
@click.option(
    "--base-port",
    default=8090,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="node-1 listens on it, node-2 on the next one...; 0: any free ports.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="New or empty directory for etcd, nodes, workers and logs [default: a new temp dir].",
)
@click.option("--slots", default=2, show_default=True, type=click.IntRange(1, 256))
@click.option("--fault-injection", is_flag=True, help="Kill the leader coordinator periodically.")
@click.option(
    "--kill-every",
    "kill_every_s",
    default=20.0,
    show_default=True,
    type=click.FloatRange(1.0),
    help="Seconds between leader kills with --fault-injection.",
)
@click.option("--json-events", is_flag=True, help="Print one JSON object per line per event.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(LOG_LEVELS))
def local(
    nodes: int,
    workers: int,
    base_port: int,
    data_dir: Path | None,
    slots: int,
    fault_injection: bool,
    kill_every_s: float,
    json_events: bool,
    log_level: str,
) -> None:
    """Start etcd members, coordinators (one per member) and workers on this machine;
    Ctrl-C stops them all.

    Every coordinator joins one cluster; a coordinator or worker that dies is
    restarted. With --fault-injection the leader is SIGKILLed every --kill-every
    seconds and the time until another node leads is printed. Needs etcd
    (apt-get install etcd-server)."""
    from dtf.local.ha_cluster import HaCluster, HaSettings

    require_etcd()
    settings = HaSettings(
        data_dir=data_dir or Path(tempfile.mkdtemp(prefix="dtf-cluster-")),
        nodes=nodes,
        workers=workers,
        base_port=base_port,
        slots=slots,
        kill_every_s=kill_every_s if fault_injection else None,
        log_level=log_level,
    )
    printer = EventPrinter(json_events)
    cluster = HaCluster(settings, printer)
    stop_on_signals(cluster.stopping, printer)
    run(cluster, printer)
