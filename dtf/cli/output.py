"""Shared CLI plumbing: the consoles, JSON output, connection options, readable numbers."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from rich.console import Console

from dtf.client import DEFAULT_COORDINATOR, Client

R = TypeVar("R")

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def with_options(
    command: Callable[..., R], options: Sequence[Callable[[Any], Any]]
) -> Callable[..., R]:
    """``command`` decorated with click ``options``, the first listed shown first in --help."""
    for option in reversed(options):
        command = option(command)
    return command


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def with_client(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--coordinator`` and ``--api-key`` and pass the command a connected ``client``."""

    @click.option(
        "--api-key",
        envvar="DTF_API_KEY",
        help="API key sent as a bearer token [env: DTF_API_KEY].",
    )
    @click.option(
        "--coordinator",
        envvar="DTF_COORDINATOR",
        default=DEFAULT_COORDINATOR,
        show_default=True,
        help="Coordinator URL, or several separated by commas [env: DTF_COORDINATOR].",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, coordinator: str, api_key: str | None, **kwargs: Any) -> Any:
        with Client(coordinator, api_key) as client:
            return func(*args, client=client, **kwargs)

    return wrapper


def parse_pairs(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    """``("a=1", "b=2")`` -> ``{"a": "1", "b": "2"}``; a pair without ``=`` is a usage error."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        parsed[key] = value
    return parsed


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def age_text(timestamp: float | None, now: float | None = None) -> str:
    """How long ago a wall-clock ``timestamp`` was, e.g. ``"12.0s ago"``."""
    if timestamp is None:
        return "-"
    elapsed = max(0.0, (time.time() if now is None else now) - timestamp)
    return f"{duration_text(elapsed)} ago"


def clock_text(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
