"""The ``--fault-*`` flags of ``dtf worker``, ``dtf up`` and ``dtf demo``.

``fault_options`` adds them to a command and hands the command one
``faults`` argument instead: ``FaultSettings``, or None without
``--fault-injection``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from dtf.cli.output import with_options
from dtf.errors import InvalidRequest
from dtf.worker.faults import FaultKind, FaultSettings, parse_kinds

R = TypeVar("R")


def fault_settings(
    *, enabled: bool, rate: float, seed: int, kinds: str, log_path: Path | None
) -> FaultSettings | None:
    if not enabled:
        return None
    try:
        return FaultSettings(rate=rate, seed=seed, kinds=parse_kinds(kinds), log_path=log_path)
    except InvalidRequest as exc:
        raise click.BadParameter(exc.message, param_hint=f"--{exc.field or 'fault'}") from None


FAULT_OPTIONS = [
    click.option(
        "--fault-injection",
        is_flag=True,
        help="Inject real faults (crashes, hangs, OOM, emulated device errors, "
        "dropped connections, agent crashes) into attempts, to watch recovery work.",
    ),
    click.option(
        "--fault-rate",
        default=0.1,
        show_default=True,
        type=click.FloatRange(0.0, 1.0),
        help="Probability that an attempt gets a fault.",
    ),
    click.option(
        "--fault-seed",
        default=0,
        show_default=True,
        type=int,
        help="Faults follow from (seed, task id, attempt): the same seed repeats a run.",
    ),
    click.option(
        "--fault-kinds",
        default="all",
        show_default=True,
        help=f"Comma-separated, from: {', '.join(FaultKind)}.",
    ),
]

LOG_OPTION = click.option(
    "--fault-log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append each injected fault to this JSON Lines file.",
)


def fault_options(*, with_log: bool) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Add ``--fault-injection/--fault-rate/--fault-seed/--fault-kinds`` (and
    ``--fault-log`` when ``with_log``) and pass them on as ``faults``."""
    options = [*FAULT_OPTIONS, LOG_OPTION] if with_log else FAULT_OPTIONS

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(command)
        def with_faults(
            *args: Any,
            fault_injection: bool,
            fault_rate: float,
            fault_seed: int,
            fault_kinds: str,
            fault_log: Path | None = None,
            **kwargs: Any,
        ) -> R:
            faults = fault_settings(
                enabled=fault_injection,
                rate=fault_rate,
                seed=fault_seed,
                kinds=fault_kinds,
                log_path=fault_log.resolve() if fault_log else None,
            )
            return command(*args, faults=faults, **kwargs)

        return with_options(with_faults, options)

    return decorate
