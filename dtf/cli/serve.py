"""Long-running commands: ``dtf coordinator``, ``dtf worker`` and ``dtf up``."""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path
from types import FrameType

import click

from dtf.cli.cluster_options import ClusterFlags, cluster_options
from dtf.cli.fault_options import fault_options
from dtf.cli.output import parse_pairs
from dtf.cli.recovery_options import RecoveryFlags, recovery_options
from dtf.client import DEFAULT_COORDINATOR, parse_coordinators
from dtf.core.model import HardwareClass
from dtf.worker.faults import FaultSettings

LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def exit_0_on_stop_signals() -> None:
    """Make SIGINT and SIGTERM end this process with exit code 0, after cleaning up.

    uvicorn (0.29 and later) takes both signals over while it serves, shuts down on
    one, then puts back the handlers it found and raises the signal again for them.
    With Python's defaults a coordinator that had shut down cleanly then died of
    SIGTERM (exit code -15) or stopped with "Aborted!" (1). SystemExit(0) raised here
    unwinds ``asyncio.run`` instead (it cancels what is left) and exits 0; a signal
    that comes before uvicorn serves stops the start-up the same way."""

    def exit_0(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, exit_0)


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
    "--snapshot-every",
    default=10_000,
    show_default=True,
    type=click.IntRange(1),
    help="Journal entries between state snapshots (the journal before one is compacted).",
)
@recovery_options
@click.option(
    "--db-path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="DuckDB file the results are written to [default: DATA_DIR/results.duckdb].",
)
@click.option(
    "--results-flush-interval",
    "results_flush_interval_s",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.05, 60.0),
    help="Seconds between writes of finished work to the results file. Longer costs "
    "less CPU per task; results queries always write what is pending first.",
)
@click.option(
    "--checkpoint-grace",
    "checkpoint_grace_s",
    default=600.0,
    show_default=True,
    type=click.FloatRange(60.0),
    help="A standalone coordinator sweeps every 10 minutes and deletes the checkpoints "
    "no task has as its latest once they were stored at least this many seconds ago "
    "(a cluster node keeps them all).",
)
@click.option(
    "--admin-key",
    envvar="DTF_ADMIN_KEY",
    help="Admin API key [env: DTF_ADMIN_KEY]; without it one is created in DATA_DIR/admin.key.",
)
@cluster_options
def coordinator(
    host: str,
    port: int,
    data_dir: Path,
    lease_timeout_s: float,
    worker_timeout_s: float,
    log_level: str,
    snapshot_every: int,
    recovery: RecoveryFlags,
    db_path: Path | None,
    results_flush_interval_s: float,
    checkpoint_grace_s: float,
    admin_key: str | None,
    cluster: ClusterFlags,
) -> None:
    """Run the coordinator until SIGINT or SIGTERM.

    Standalone, it keeps its journal in DATA_DIR. With --cluster and --etcd it
    joins a cluster: every node applies one log kept in etcd, one is elected
    leader and runs the clock, and any node serves clients and workers. All
    nodes of a cluster need the same admin key (DTF_ADMIN_KEY)."""
    from dtf.coordinator.server import run_coordinator
    from dtf.coordinator.settings import CoordinatorSettings

    configure_logging(log_level)
    exit_0_on_stop_signals()
    settings = CoordinatorSettings(
        data_dir=data_dir.resolve(),
        host=host,
        port=port,
        admin_key=admin_key,
        lease_timeout_s=lease_timeout_s,
        worker_timeout_s=worker_timeout_s,
        log_level=log_level,
        snapshot_every=snapshot_every,
        results_db_path=db_path.resolve() if db_path else None,
        results_flush_interval_s=results_flush_interval_s,
        checkpoint_grace_s=checkpoint_grace_s,
        cluster=cluster.settings(host, port),
    )
    click.get_current_context().exit(run_coordinator(recovery.apply(settings)))


def parse_hardware(values: tuple[str, ...]) -> list[HardwareClass]:
    """``("cuda,webgpu", "tpu")`` -> hardware classes; an unknown name is a usage error."""
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    known = {h.value for h in HardwareClass}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise click.BadParameter(
            f"unknown hardware class {', '.join(unknown)}; choose from {', '.join(sorted(known))}",
            param_hint="--declare-hardware",
        )
    return [HardwareClass(name) for name in dict.fromkeys(names)]


@click.command()
@click.option(
    "--coordinator",
    envvar="DTF_COORDINATOR",
    default=DEFAULT_COORDINATOR,
    show_default=True,
    help="Coordinator URL, or several separated by commas [env: DTF_COORDINATOR].",
)
@click.option("--api-key", envvar="DTF_API_KEY", default="", help="Worker key [env: DTF_API_KEY].")
@click.option("--worker-id", help="Name of this worker [default: the host name].")
@click.option("--slots", default=1, show_default=True, type=click.IntRange(1, 256))
@click.option("--label", "labels", multiple=True, help="Label KEY=VALUE tasks can require.")
@click.option(
    "--declare-hardware",
    multiple=True,
    help="Hardware classes to offer although not detected, e.g. cuda,webgpu (shown as declared).",
)
@click.option(
    "--declare-gpu", multiple=True, help="A GPU to offer: MODEL[:MEMORY_GB[:COMPUTE_CAPABILITY]]."
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where tasks run [default: a temporary directory removed at exit].",
)
@click.option("--burst", is_flag=True, help="Exit once the queue has nothing more for this worker.")
@click.option(
    "--health-check",
    metavar="COMMAND",
    help="Shell command that must exit 0 before this worker gets work, and again "
    "to leave quarantine (e.g. 'nvidia-smi' or a tiny smoke test).",
)
@click.option(
    "--health-check-timeout",
    "health_check_timeout_s",
    default=300.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds before a running health check is killed and counted as failed.",
)
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append a JSON line for every task process this worker starts and stops (task, "
    "attempt, fence, pid, started/exited/killed, monotonic and wall time, why): what "
    "ran on this machine when.",
)
@click.option("--log-level", default="info", show_default=True, type=click.Choice(LOG_LEVELS))
@fault_options(with_log=True)
def worker(
    coordinator: str,
    api_key: str,
    worker_id: str | None,
    slots: int,
    labels: tuple[str, ...],
    declare_hardware: tuple[str, ...],
    declare_gpu: tuple[str, ...],
    work_dir: Path | None,
    burst: bool,
    health_check: str | None,
    health_check_timeout_s: float,
    audit_log: Path | None,
    log_level: str,
    faults: FaultSettings | None,
) -> None:
    """Run a worker agent: detect hardware, take matching tasks, report outcomes."""
    from dtf.worker.hardware import parse_declared_gpu
    from dtf.worker.settings import WorkerSettings

    configure_logging(log_level)
    settings = WorkerSettings(
        coordinator_urls=parse_coordinators(coordinator),
        api_key=api_key,
        slots=slots,
        labels=parse_pairs(labels, "--label"),
        declared_hardware=parse_hardware(declare_hardware),
        declared_gpus=[parse_declared_gpu(value) for value in declare_gpu],
        work_dir=work_dir.resolve() if work_dir else None,
        burst=burst,
        health_check=health_check,
        health_check_timeout_s=health_check_timeout_s,
        worker_id=worker_id or socket.gethostname(),
        faults=faults,
        audit_log=audit_log.resolve() if audit_log else None,
    )
    from dtf.worker.run import run_worker

    click.get_current_context().exit(run_worker(settings))
