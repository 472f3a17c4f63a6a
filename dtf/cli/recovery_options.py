"""The coordinator's recovery flags, shared by ``dtf coordinator`` and ``dtf up``.

``recovery_options`` adds ``--circuit-breaker-threshold``,
``--circuit-breaker-reset-time``, ``--health-threshold``, ``--health-half-life``
and ``--recovery-config`` to a command and hands it one ``recovery`` argument:
``RecoveryFlags``, which either configures a coordinator in this process or
becomes the flags of one started as a child process.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dtf.cli.output import with_options
from dtf.core.breakers import DEFAULT_RESET_TIME_S, DEFAULT_THRESHOLD
from dtf.core.health import DEFAULT_HALF_LIFE_S
from dtf.core.health import DEFAULT_THRESHOLD as DEFAULT_HEALTH_THRESHOLD

if TYPE_CHECKING:
    from dtf.coordinator.settings import CoordinatorSettings

R = TypeVar("R")


@dataclass(frozen=True)
class RecoveryFlags:
    circuit_breaker_threshold: int = DEFAULT_THRESHOLD
    circuit_breaker_reset_s: float = DEFAULT_RESET_TIME_S
    health_threshold: float = DEFAULT_HEALTH_THRESHOLD
    health_half_life_s: float = DEFAULT_HALF_LIFE_S
    recovery_config: Path | None = None

    def apply(self, settings: CoordinatorSettings) -> CoordinatorSettings:
        from dtf.coordinator.recovery_config import load_recovery_config

        settings = dataclasses.replace(
            settings,
            circuit_breaker_threshold=self.circuit_breaker_threshold,
            circuit_breaker_reset_s=self.circuit_breaker_reset_s,
            health_threshold=self.health_threshold,
            health_half_life_s=self.health_half_life_s,
        )
        if self.recovery_config is None:
            return settings
        policy, rules = load_recovery_config(self.recovery_config)
        return dataclasses.replace(settings, recovery=policy, classification_rules=rules)

    def coordinator_args(self) -> tuple[str, ...]:
        """The same settings as ``dtf coordinator`` flags."""
        args: tuple[str, ...] = (
            *("--circuit-breaker-threshold", str(self.circuit_breaker_threshold)),
            *("--circuit-breaker-reset-time", repr(self.circuit_breaker_reset_s)),
            *("--health-threshold", repr(self.health_threshold)),
            *("--health-half-life", repr(self.health_half_life_s)),
        )
        if self.recovery_config is not None:
            args += ("--recovery-config", str(self.recovery_config.resolve()))
        return args


OPTIONS = [
    click.option(
        "--circuit-breaker-threshold",
        default=DEFAULT_THRESHOLD,
        show_default=True,
        type=click.IntRange(1),
        help="Consecutive worker (or, from distinct workers, hardware) faults that open a breaker.",
    ),
    click.option(
        "--circuit-breaker-reset-time",
        "circuit_breaker_reset_s",
        default=DEFAULT_RESET_TIME_S,
        show_default=True,
        type=click.FloatRange(0, min_open=True),
        help="Seconds an open breaker waits before letting one probe through.",
    ),
    click.option(
        "--health-threshold",
        default=DEFAULT_HEALTH_THRESHOLD,
        show_default=True,
        type=click.FloatRange(0, 100),
        help="Health score (0-100) below which a worker is quarantined: it gets no new work.",
    ),
    click.option(
        "--health-half-life",
        "health_half_life_s",
        default=DEFAULT_HALF_LIFE_S,
        show_default=True,
        type=click.FloatRange(0, min_open=True),
        help="Seconds after which a result counts half as much in a worker's health score.",
    ),
    click.option(
        "--recovery-config",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="YAML file of recovery ladders, mode and classification rules "
        "(see examples/recovery.yaml).",
    ),
]


def recovery_options(command: Callable[..., R]) -> Callable[..., R]:
    @functools.wraps(command)
    def with_recovery(
        *args: Any,
        circuit_breaker_threshold: int,
        circuit_breaker_reset_s: float,
        health_threshold: float,
        health_half_life_s: float,
        recovery_config: Path | None,
        **kwargs: Any,
    ) -> R:
        flags = RecoveryFlags(
            circuit_breaker_threshold,
            circuit_breaker_reset_s,
            health_threshold,
            health_half_life_s,
            recovery_config,
        )
        return command(*args, recovery=flags, **kwargs)

    return with_options(with_recovery, OPTIONS)
