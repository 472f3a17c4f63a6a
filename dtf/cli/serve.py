"""Long-running commands: ``dtf coordinator``, ``dtf worker`` and ``dtf up``."""

from __future__ import annotations

import logging
from pathlib import Path

import click

LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--data-dir",
    default="./dtf-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Journal, snapshots and admin key live here.",
)
@click.option("--lease-timeout", "lease_timeout_s", default=10.0, show_default=True, type=float)
@click.option("--worker-timeout", "worker_timeout_s", default=30.0, show_default=True, type=float)
@click.option("--log-level", default="info", show_default=True, type=click.Choice(LOG_LEVELS))
@click.option(
    "--admin-key",
    envvar="DTF_ADMIN_KEY",
    help="Admin API key [env: DTF_ADMIN_KEY]; without it one is created in DATA_DIR/admin.key.",
)
def coordinator(
    host: str,
    port: int,
    data_dir: Path,
    lease_timeout_s: float,
    worker_timeout_s: float,
    log_level: str,
    admin_key: str | None,
) -> None:
    """Run the coordinator until SIGINT or SIGTERM."""
    from dtf.coordinator.server import run_coordinator
    from dtf.coordinator.settings import CoordinatorSettings

    configure_logging(log_level)
    settings = CoordinatorSettings(
        data_dir=data_dir.resolve(),
        host=host,
        port=port,
        admin_key=admin_key,
        lease_timeout_s=lease_timeout_s,
        worker_timeout_s=worker_timeout_s,
        log_level=log_level,
    )
    click.get_current_context().exit(run_coordinator(settings))
