"""``dtf up`` passes its recovery flags to the coordinator it starts, unchanged."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from dtf.cli.recovery_options import RecoveryFlags, recovery_options
from dtf.coordinator.settings import CoordinatorSettings
from dtf.core.recovery_policy import RecoveryMode

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def parsed(args: tuple[str, ...]) -> RecoveryFlags:
    seen: list[RecoveryFlags] = []

    @click.command()
    @recovery_options
    def command(recovery: RecoveryFlags) -> None:
        seen.append(recovery)

    result = CliRunner().invoke(command, list(args))
    assert result.exit_code == 0, result.output
    return seen[0]


def test_defaults_round_trip() -> None:
    assert parsed(RecoveryFlags().coordinator_args()) == RecoveryFlags()


def test_chosen_flags_round_trip() -> None:
    flags = RecoveryFlags(5, 12.5, 55.0, 30.0, EXAMPLES / "recovery.yaml")
    assert parsed(flags.coordinator_args()) == flags


def test_apply_sets_the_coordinator_settings_and_reads_the_recovery_file() -> None:
    flags = RecoveryFlags(5, 12.5, 55.0, 30.0, EXAMPLES / "recovery.yaml")
    settings = flags.apply(CoordinatorSettings(data_dir=Path("/tmp/unused")))
    assert (settings.circuit_breaker_threshold, settings.circuit_breaker_reset_s) == (5, 12.5)
    assert (settings.health_threshold, settings.health_half_life_s) == (55.0, 30.0)
    assert isinstance(settings.recovery.mode, RecoveryMode)
