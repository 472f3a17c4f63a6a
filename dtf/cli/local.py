"""``dtf up`` and ``dtf demo``: a coordinator and local workers in one process tree.

``dtf up`` restarts a worker that dies (after a short backoff, printed) and,
with ``--fault-injection``, prints each fault its workers inject as it happens.
"""

from __future__ import annotations

import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType

import click

from dtf.cli.fault_options import fault_options
from dtf.cli.output import console
from dtf.cli.recovery_options import RecoveryFlags, recovery_options
from dtf.cli.serve import LOG_LEVELS
from dtf.local import ClusterSettings, LocalCluster
from dtf.worker.faults import FaultSettings

DATA_DIR_TYPE = click.Path(file_okay=False, path_type=Path)


def stop_event_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so the main thread can shut down in order."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        console.print(
            f"\n{signal.Signals(signum).name} received: stopping workers, then the coordinator"
        )
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


def serve_until_stopped(cluster: LocalCluster, stop: threading.Event) -> int:
    """Watch the coordinator until a signal arrives (the supervisor restarts
    workers); print injected faults as they come. 1 if the coordinator died."""
    faults_shown = 0
    while not stop.wait(1.0):
        injected = cluster.injected_faults()
        for fault in injected[faults_shown:]:
            console.print(f"[magenta]{fault.describe()}[/magenta]", highlight=False, soft_wrap=True)
        faults_shown = len(injected)
        coordinator = cluster.coordinator
        if coordinator is not None and not coordinator.is_running:
            console.print(
                f"[red]the coordinator exited with code {coordinator.exit_code}[/red]; "
                f"see {coordinator.log_path}"
            )
            return 1
    return 0


def print_worker_event(line: str) -> None:
    console.print(f"[yellow]{line}[/yellow]", highlight=False, soft_wrap=True)


@click.command()
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0, 64))
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--data-dir", default="./dtf-data", show_default=True, type=DATA_DIR_TYPE)
@click.option("--slots", default=2, show_default=True, type=click.IntRange(1, 256))
@click.option("--lease-timeout", "lease_timeout_s", default=10.0, show_default=True, type=float)
@click.option("--log-level", default="info", show_default=True, type=click.Choice(LOG_LEVELS))
@click.option("--admin-key", envvar="DTF_ADMIN_KEY", help="Admin key [env: DTF_ADMIN_KEY].")
@recovery_options
@fault_options(with_log=False)
def up(
    workers: int,
    port: int,
    data_dir: Path,
    slots: int,
    lease_timeout_s: float,
    log_level: str,
    admin_key: str | None,
    recovery: RecoveryFlags,
    faults: FaultSettings | None,
) -> None:
    """Start a coordinator and local workers; Ctrl-C stops them all.

    A worker that dies is restarted. With --fault-injection the workers inject
    real faults into their attempts (see README, "Fault injection")."""
    settings = ClusterSettings(
        data_dir=data_dir,
        workers=workers,
        port=port,
        slots=slots,
        lease_timeout_s=lease_timeout_s,
        admin_key=admin_key,
        log_level=log_level,
        restart_workers=True,
        faults=faults,
        coordinator_args=recovery.coordinator_args(),
    )
    stop = stop_event_on_signals()
    cluster = LocalCluster(settings, report=print_worker_event)
    try:
        with console.status(f"starting a coordinator and {workers} workers..."):
            cluster.start()
        for line in cluster.usage_lines():
            console.print(line, markup=False, soft_wrap=True)
        code = serve_until_stopped(cluster, stop)
    finally:
        cluster.stop()
    console.print("stopped")
    click.get_current_context().exit(code)


def default_examples_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "examples"


@click.command()
@click.option(
    "--keep-running", is_flag=True, help="Leave the cluster up afterwards (Ctrl-C stops it)."
)
@click.option(
    "--data-dir", type=DATA_DIR_TYPE, help="Where to keep the data [default: a new temp dir]."
)
@click.option(
    "--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="0: any free port."
)
@click.option("--examples-dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--timeout",
    "timeout_s",
    default=300.0,
    show_default=True,
    help="Give up after this many seconds.",
)
@fault_options(with_log=False)
def demo(
    keep_running: bool,
    data_dir: Path | None,
    port: int,
    examples_dir: Path | None,
    timeout_s: float,
    faults: FaultSettings | None,
) -> None:
    """Start a coordinator and 3 workers, run a workload through failures, and summarise.

    With --fault-injection the workers also inject real faults (try --fault-rate 0.3)."""
    from dtf.demo.runner import DemoSettings, run_demo

    settings = DemoSettings(
        data_dir=data_dir or Path(tempfile.mkdtemp(prefix="dtf-demo-")),
        examples_dir=examples_dir or default_examples_dir(),
        port=port,
        timeout_s=timeout_s,
        keep_running=keep_running,
        faults=faults,
    )
    stop = stop_event_on_signals()
    click.get_current_context().exit(run_demo(settings, console, stop))
