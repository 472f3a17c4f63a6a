"""``dtf cluster``: the coordinator cluster's nodes and leadership, and taking a node
out of service or back."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click
from rich.table import Table

from dtf.cli.cluster_local import local
from dtf.cli.output import age_text, clock_text, console, json_option, print_json, with_client
from dtf.cli.render import id_column
from dtf.client import Client

Record = dict[str, Any]
HISTORY_SHOWN = 5


@click.group()
def cluster() -> None:
    """The coordinator cluster: nodes, leader, leadership history.

    A coordinator started without --cluster is a standalone cluster of one
    node that is always the leader.
    """


cluster.add_command(local)


@cluster.command("status")
@json_option
@with_client
def status(client: Client, as_json: bool) -> None:
    """Nodes with their role, applied position and health; the leader and recent terms."""
    reply = _get(client, "/api/cluster/status")
    if as_json:
        print_json(reply)
        return
    console.print(header_line(reply), highlight=False)
    console.print(leader_line(reply["leader"]), highlight=False)
    console.print(nodes_table(reply["nodes"]))
    health = "[green]healthy[/green]" if reply["healthy"] else "[bold red]unhealthy[/bold red]"
    console.print(f"{health}: {reply['detail']}")
    history = _get(client, "/api/cluster/leader")["history"][:HISTORY_SHOWN]
    console.print(history_table(history))


@cluster.command("nodes")
@json_option
@with_client
def nodes(client: Client, as_json: bool) -> None:
    """Every node with its role, applied position, lag and health."""
    found = _get(client, "/api/cluster/nodes")["nodes"]
    if as_json:
        print_json({"nodes": found})
        return
    console.print(nodes_table(found))


@cluster.command("leader")
@json_option
@with_client
def leader(client: Client, as_json: bool) -> None:
    """The current leader and the leadership history, newest first."""
    reply = _get(client, "/api/cluster/leader")
    if as_json:
        print_json(reply)
        return
    console.print(leader_line(reply["leader"]), highlight=False)
    console.print(history_table(reply["history"]))


@cluster.command("disable")
@click.argument("node_id")
@click.option("--reason", default="", help="Why, for the record (shown in `dtf cluster nodes`).")
@json_option
@with_client
def disable(client: Client, node_id: str, reason: str, as_json: bool) -> None:
    """Take a node out of service (admin key): it gives up leadership, never campaigns,
    and its /api/cluster/health answers 503; it keeps applying the log and serving reads."""
    _show(_set_enabled(client, node_id, enabled=False, reason=reason), as_json)


@cluster.command("enable")
@click.argument("node_id")
@click.option("--reason", default="", help="Why, for the record.")
@json_option
@with_client
def enable(client: Client, node_id: str, reason: str, as_json: bool) -> None:
    """Put a disabled node back in service (admin key)."""
    _show(_set_enabled(client, node_id, enabled=True, reason=reason), as_json)


def _get(client: Client, path: str) -> Record:
    reply: Record = client.request("GET", path, idempotent=True)
    return reply


def _set_enabled(client: Client, node_id: str, *, enabled: bool, reason: str) -> Record:
    action = "enable" if enabled else "disable"
    path = f"/api/cluster/node/{quote(node_id, safe='')}/{action}"
    node: Record = client.request("POST", path, idempotent=True, json={"reason": reason})
    return node


def _show(node: Record, as_json: bool) -> None:
    if as_json:
        print_json(node)
        return
    state = "enabled" if node["enabled"] else f"disabled ({node['disabled_reason'] or 'no reason'})"
    console.print(f"{node['node_id']} ({node['role']}): {state}", highlight=False)


def header_line(status: Record) -> str:
    where = f"answered by {status['node_id']} (applied seq {status['applied_seq']})"
    if status["mode"] == "standalone":
        return f"standalone coordinator (started without --cluster), {where}"
    count = len(status["nodes"])
    size = f"{count} node{'' if count == 1 else 's'}, log seq {status['log_seq']}"
    return f"cluster {status['name']} of {size}, {where}"


def leader_line(term: Record | None) -> str:
    if term is None:
        return "leader: none (an election is under way)"
    since = f"since {clock_text(term['started_at'])} ({age_text(term['started_at'])})"
    return f"leader: {term['node_id']} at {term['url']}, epoch {term['epoch']}, {since}"


def nodes_table(nodes: list[Record]) -> Table:
    table = Table(
        id_column("node", [node["node_id"] for node in nodes]),
        "url", "role", "enabled", "applied seq", "lag", "health", "updated",
    )  # fmt: skip
    for node in nodes:
        table.add_row(
            node["node_id"],
            node["url"],
            "[bold]leader[/bold]" if node["role"] == "leader" else node["role"],
            "yes" if node["enabled"] else f"[yellow]no[/yellow]: {node['disabled_reason'] or '-'}",
            str(node["applied_seq"]),
            str(node["lag"]),
            "[green]healthy[/green]" if node["healthy"] else "[bold red]unhealthy[/bold red]",
            age_text(node["updated_at"]),
        )
    return table


def history_table(terms: list[Record]) -> Table:
    table = Table("epoch", "leader", "started", "ended", "reason", title="leadership")
    for term in terms:
        table.add_row(
            str(term["epoch"]),
            term["node_id"],
            clock_text(term["started_at"]),
            clock_text(term["ended_at"]) if term["ended_at"] is not None else "current",
            term["end_reason"] or "-",
        )
    return table
