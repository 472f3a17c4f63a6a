"""``dtf failures``: recurring failure patterns and what to do about them."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from dtf.cli.output import age_text, console, duration_text, json_option, print_json, with_client
from dtf.cli.render import id_column
from dtf.client import Client

Record = dict[str, Any]

KIND_LABELS = {"failure_type": "failure type"}


@click.command()
@click.option(
    "--window",
    "window_s",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Look at failures of the last this many seconds.",
)
@click.option(
    "--min-confidence",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="Hide patterns less certain than this (0 shows every one).",
)
@json_option
@with_client
def failures(client: Client, window_s: float, min_confidence: float, as_json: bool) -> None:
    """Show recurring failures: by worker, hardware class, failure type and
    task, and bursts; each with a count, a confidence and a recommended action."""
    reply = client.failure_patterns(window_s=window_s, min_confidence=min_confidence)
    if as_json:
        print_json(reply)
    else:
        print_patterns(console, reply, min_confidence)


def print_patterns(
    out: Console, reply: Record, min_confidence: float, now: float | None = None
) -> None:
    patterns: list[Record] = reply.get("patterns", [])
    window = duration_text(reply.get("window_s"))
    considered = reply.get("failures_considered", 0)
    if patterns:
        out.print(patterns_table(patterns, now))
    out.print(
        f"{len(patterns)} pattern{'' if len(patterns) == 1 else 's'} with confidence >= {min_confidence:g} "
        f"among {considered} failures in the last {window}"
    )


def patterns_table(patterns: list[Record], now: float | None = None) -> Table:
    keys = [pattern["key"] for pattern in patterns]
    table = Table(
        "pattern", id_column("key", keys), "count", "confidence", "last seen", "recommended action"
    )
    for pattern in patterns:
        table.add_row(
            KIND_LABELS.get(pattern["kind"], pattern["kind"]),
            pattern["key"],
            str(pattern["count"]),
            confidence_text(pattern["confidence"]),
            age_text(pattern.get("last_at"), now),
            pattern["action"],
        )
    return table


def confidence_text(confidence: float) -> str:
    style = "bold red" if confidence >= 0.75 else "yellow" if confidence >= 0.5 else "dim"
    return f"[{style}]{confidence:.2f}[/{style}]"
