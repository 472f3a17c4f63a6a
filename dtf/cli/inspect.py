"""Read and manage what the coordinator holds: tasks, status, keys (results: ``results.py``)."""

from __future__ import annotations

import click

from dtf.cli.output import console, json_option, print_json, with_client
from dtf.cli.render import status_table, tasks_table
from dtf.cli.task_view import print_task
from dtf.client import Client

TASK_STATUSES = ("blocked", "pending", "assigned", "running", "completed", "failed", "cancelled")
ROLES = ("admin", "submitter", "worker", "viewer")


@click.command()
@click.option("--status", type=click.Choice(TASK_STATUSES), help="Only tasks in this status.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(min=0))
@json_option
@with_client
def tasks(client: Client, status: str | None, limit: int, offset: int, as_json: bool) -> None:
    """List tasks."""
    page = client.list_page(status, limit=limit, offset=offset)
    if as_json:
        print_json(page)
        return
    console.print(tasks_table(page["tasks"]))
    shown = len(page["tasks"])
    console.print(f"{shown} of {page.get('total', shown)} tasks shown (from offset {offset})")


@click.group()
def task() -> None:
    """Show or cancel one task."""


@task.command("show")
@click.argument("task_id")
@json_option
@with_client
def task_show(client: Client, task_id: str, as_json: bool) -> None:
    """Show a task: status, why it waits, and every attempt."""
    record = client.get(task_id)
    if as_json:
        print_json(record)
    else:
        print_task(console, record)


@task.command("cancel")
@click.argument("task_id")
@json_option
@with_client
def task_cancel(client: Client, task_id: str, as_json: bool) -> None:
    """Cancel a task that has not finished."""
    record = client.cancel(task_id)
    if as_json:
        print_json(record)
    else:
        click.echo(f"{record['id']} {record['status']}")


@click.command()
@json_option
@with_client
def status(client: Client, as_json: bool) -> None:
    """Show the coordinator's task and worker counts."""
    reply = client.status()
    if as_json:
        print_json(reply)
    else:
        console.print(f"coordinator {client.url}")
        console.print(status_table(reply))


@click.group()
def keys() -> None:
    """Manage API keys (needs an admin key)."""


@keys.command("create")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--name", default="", help="A note on who or what uses the key.")
@json_option
@with_client
def keys_create(client: Client, role: str, name: str, as_json: bool) -> None:
    """Create an API key and print it (it is shown only once)."""
    reply = client.create_key(role, name)
    if as_json:
        print_json(reply)
    else:
        click.echo(reply["key"])
