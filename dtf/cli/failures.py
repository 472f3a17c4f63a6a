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
@click.option(
    "--min-probability",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="Hide worker, hardware and task patterns whose learned probability is below "
    "this; failure-type and burst patterns have none and are always shown.",
)
@json_option
@with_client
def failures(
    client: Client, window_s: float, min_confidence: float, min_probability: float, as_json: bool
) -> None:
    """Show recurring failures: by worker, hardware class, failure type and
    task, and bursts; each with a count, the rules' confidence, a learned
    probability that it is real, and a recommended action. Most probable first."""
    reply = client.failure_patterns(window_s=window_s, min_confidence=min_confidence)
    if as_json:
        print_json({**reply, "patterns": probable(reply.get("patterns", []), min_probability)})
    else:
        print_patterns(console, reply, min_confidence, min_probability)


def probable(patterns: list[Record], min_probability: float) -> list[Record]:
    """The patterns with no learned probability or one of at least ``min_probability``."""
    return [
        pattern
        for pattern in patterns
        if pattern.get("learned_probability") is None
        or pattern["learned_probability"] >= min_probability
    ]


def print_patterns(
    out: Console,
    reply: Record,
    min_confidence: float,
    min_probability: float = 0.0,
    now: float | None = None,
) -> None:
    every: list[Record] = reply.get("patterns", [])
    patterns = probable(every, min_probability)
    window = duration_text(reply.get("window_s"))
    considered = reply.get("failures_considered", 0)
    if patterns:
        out.print(patterns_table(patterns, now))
    limits = f"confidence >= {min_confidence:g}"
    if min_probability > 0:
        limits += f" and learned probability >= {min_probability:g}"
        limits += f" ({len(every) - len(patterns)} more below it)"
    out.print(
        f"{len(patterns)} pattern{'' if len(patterns) == 1 else 's'} with {limits} "
        f"among {considered} failures in the last {window}"
    )


def patterns_table(patterns: list[Record], now: float | None = None) -> Table:
    keys = [pattern["key"] for pattern in patterns]
    table = Table(
        "pattern",
        id_column("key", keys),
        "count",
        "confidence",
        "learned",
        "last seen",
        "recommended action",
    )
    for pattern in patterns:
        table.add_row(
            KIND_LABELS.get(pattern["kind"], pattern["kind"]),
            pattern["key"],
            str(pattern["count"]),
            share_text(pattern["confidence"]),
            share_text(pattern.get("learned_probability")),
            age_text(pattern.get("last_at"), now),
            pattern["action"],
        )
    return table


def share_text(share: float | None) -> str:
    """A confidence or probability, brighter the higher it is; ``-`` for none."""
    if share is None:
        return "[dim]-[/dim]"
    style = "bold red" if share >= 0.75 else "yellow" if share >= 0.5 else "dim"
    return f"[{style}]{share:.2f}[/{style}]"
