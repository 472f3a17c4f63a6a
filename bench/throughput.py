"""Throughput and latency of dtf next to the physical limit, Celery and Dask.

W local worker processes run N tiny tasks, each the command ``true``. Prints
figures (a rich table, or JSON with ``--json``); asserts nothing. See
bench/README.md for what each figure means.

    .venv/bin/python bench/throughput.py [--workers 2] [--tasks 2000] [--slots 4]
                                         [--skip celery,dask] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _baseline import measure_limit
from _procs import BenchError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

SKIPPABLE = ("dtf", "celery", "dask")
LABELS = {
    "limit": "limit: W x subprocess.run",
    "limit_after": "limit, again after the systems",
    "dtf": "dtf",
    "dtf_big_submit": "dtf 10,000-task submit",
    "celery": "Celery + Redis",
    "dask": "Dask distributed",
}
stderr = Console(stderr=True)


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes (W)")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per run (N)")
    parser.add_argument(
        "--slots",
        default="4,16",
        help="concurrent tasks per dtf worker, comma-separated to measure several "
        "(Celery reserves 4 tasks per process by default)",
    )
    parser.add_argument("--skip", default="", help=f"comma-separated, from {','.join(SKIPPABLE)}")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on each wait, s")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    options = parser.parse_args()
    options.skip = {name.strip() for name in options.skip.split(",") if name.strip()}
    try:
        options.slots = [int(value) for value in options.slots.split(",") if value.strip()]
    except ValueError:
        parser.error(f"--slots {options.slots!r}: give whole numbers separated by commas")
    if not options.slots or min(options.slots) < 1:
        parser.error("--slots: give at least one number, each 1 or more")
    unknown = options.skip - set(SKIPPABLE)
    if unknown:
        parser.error(f"--skip {','.join(sorted(unknown))}: choose from {','.join(SKIPPABLE)}")
    return options


def attempt(name: str, measure: Callable[[], Any]) -> Any:
    """Run one measurement; a system that cannot run is reported, not fatal."""
    stderr.print(f"[dim]measuring {LABELS.get(name, name)} ...[/dim]")
    try:
        return measure()
    except (BenchError, ImportError) as error:
        stderr.print(f"[red]{name} could not run:[/red] {escape(str(error))}")
        return {"error": str(error)}


def measure_all(options: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    workers, tasks, timeout_s = options.workers, options.tasks, options.timeout
    systems: dict[str, Any] = {
        "limit": attempt("limit", lambda: {"tasks_per_s": measure_limit(workers, tasks)})
    }
    figures: dict[str, Any] = {
        "config": {"workers": workers, "tasks": tasks, "slots": options.slots},
        "systems": systems,
    }
    if "dtf" not in options.skip:
        from _dtf import measure_big_submit, measure_dtf

        for slots in options.slots:
            (work_dir / f"s{slots}").mkdir()
            name = f"dtf, {slots} slots"
            LABELS[name] = f"dtf ({slots} slots per worker)"
            systems[name] = attempt(
                name, lambda s=slots: measure_dtf(workers, s, tasks, work_dir / f"s{s}", timeout_s)
            )
        figures["dtf_big_submit"] = attempt("dtf_big_submit", lambda: measure_big_submit(work_dir))
    if "celery" not in options.skip:
        systems["celery"] = attempt(
            "celery", lambda: celery_figures(workers, tasks, work_dir, timeout_s)
        )
    if "dask" not in options.skip:
        systems["dask"] = attempt("dask", lambda: dask_figures(workers, tasks, timeout_s))
    limit_after = attempt("limit_after", lambda: measure_limit(workers, tasks))
    settle_limit(systems, limit_after)
    add_ratios(systems)
    return figures


def celery_figures(workers: int, tasks: int, work_dir: Path, timeout_s: float) -> dict[str, float]:
    from _celery import measure_celery

    return {"tasks_per_s": measure_celery(workers, tasks, work_dir, timeout_s)}


def dask_figures(workers: int, tasks: int, timeout_s: float) -> dict[str, float]:
    from _dask import measure_dask

    return {"tasks_per_s": measure_dask(workers, tasks, timeout_s)}


def settle_limit(systems: dict[str, Any], after: Any) -> None:
    """The limit is measured before and after the systems, since the machine's
    speed drifts; ratios use the mean of the two."""
    before = systems["limit"].get("tasks_per_s")
    if before and isinstance(after, float):
        systems["limit"] = {
            "tasks_per_s": (before + after) / 2,
            "before_tasks_per_s": before,
            "after_tasks_per_s": after,
        }


def add_ratios(systems: dict[str, Any]) -> None:
    limit = systems["limit"].get("tasks_per_s")
    for figures in systems.values():
        if limit and "tasks_per_s" in figures:
            figures["ratio_to_limit"] = figures["tasks_per_s"] / limit


def render(figures: dict[str, Any]) -> None:
    config = figures["config"]
    console = Console()
    title = f"{config['tasks']} tasks running `true` on {config['workers']} workers"
    throughput = Table(title=title)
    throughput.add_column("system")
    throughput.add_column("tasks/s", justify="right")
    throughput.add_column("ratio to limit", justify="right")
    for name, system in figures["systems"].items():
        if "error" in system:
            throughput.add_row(LABELS[name], f"[red]{escape(system['error'][:80])}[/red]", "")
            continue
        ratio = system.get("ratio_to_limit")
        ratio_text = f"{ratio:.2f}" if ratio is not None else ""
        throughput.add_row(LABELS[name], f"{system['tasks_per_s']:,.0f}", ratio_text)
    console.print(throughput)
    limit = figures["systems"]["limit"]
    if "before_tasks_per_s" in limit:
        console.print(
            f"limit measured before and after the systems: {limit['before_tasks_per_s']:,.0f} "
            f"and {limit['after_tasks_per_s']:,.0f} tasks/s; ratios use their mean"
        )
    for name, system in figures["systems"].items():
        if name.startswith("dtf") and "error" not in system:
            console.print(latency_table(LABELS[name], system, config["tasks"]))
    big_submit = figures.get("dtf_big_submit")
    if big_submit and "error" not in big_submit:
        console.print(
            f"dtf: POST /api/tasks/batch of {big_submit['tasks']:,} tasks, no workers: "
            f"{big_submit['median_s']:.2f} s (median of 3)"
        )


def latency_table(label: str, dtf: dict[str, Any], tasks: int) -> Table:
    table = Table(title=f"{label}: latency in ms, from coordinator timestamps")
    table.add_column("scenario")
    for column in ("submit→start p50", "p99", "submit→done p50", "p99"):
        table.add_column(column, justify="right")
    scenarios = (
        (f"under load ({tasks} at once)", dtf["under_load"]),
        (f"idle ({dtf['idle_samples']}, one at a time)", dtf["idle"]),
    )
    for label, figures in scenarios:
        start, done = figures["submit_to_start_s"], figures["submit_to_done_s"]
        values = (start["p50"], start["p99"], done["p50"], done["p99"])
        table.add_row(label, *(f"{1000 * value:,.1f}" for value in values))
    return table


def main() -> None:
    options = parse_options()
    with tempfile.TemporaryDirectory(prefix="dtf-bench-") as work_dir:
        figures = measure_all(options, Path(work_dir))
    if options.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
    else:
        render(figures)


if __name__ == "__main__":
    main()
