"""``dtf workers``: list workers with their health, and take them out of service or back."""

from __future__ import annotations

import click

from dtf.cli.output import console, json_option, print_json, with_client
from dtf.cli.render import health_reason, health_text, workers_table
from dtf.client import Client


@click.group(invoke_without_command=True)
@json_option
@with_client
@click.pass_context
def workers(ctx: click.Context, client: Client, as_json: bool) -> None:
    """List workers with their hardware, load and health score (0-100).

    A worker whose score falls below the coordinator's --health-threshold is
    quarantined: it finishes what it runs and gets nothing new until its score
    recovers, its --health-check passes, or an admin runs `dtf workers enable`.
    Below the table, each worker's reason is shown when something weighs on it.
    """
    if ctx.invoked_subcommand is not None:
        return
    found = client.workers()
    if as_json:
        print_json({"workers": found})
        return
    console.print(workers_table(found))
    for worker in found:
        reason = health_reason(worker)
        if reason is not None:
            console.print(f"  {worker['id']}: {reason}", highlight=False)


@workers.command("enable")
@click.argument("worker_id")
@click.option("--reason", default="", help="Why, for the record.")
@json_option
@with_client
def enable(client: Client, worker_id: str, reason: str, as_json: bool) -> None:
    """End a worker's quarantine so it takes work again (admin key)."""
    _show(client.set_worker_enabled(worker_id, enabled=True, reason=reason), as_json)


@workers.command("disable")
@click.argument("worker_id")
@click.option("--reason", default="", help="Why, for the record (shown in `dtf workers`).")
@json_option
@with_client
def disable(client: Client, worker_id: str, reason: str, as_json: bool) -> None:
    """Quarantine a worker by hand: running work finishes, nothing new is sent (admin key)."""
    _show(client.set_worker_enabled(worker_id, enabled=False, reason=reason), as_json)


def _show(worker: dict[str, object], as_json: bool) -> None:
    if as_json:
        print_json(worker)
        return
    reason = health_reason(worker)
    console.print(
        f"{worker['id']}: health {health_text(worker)}" + (f" — {reason}" if reason else "")
    )
