"""``dtf results``: list attempt results, aggregate metrics, export tables; the
analyses (``regressions``, ``compare``, ``flaky``, ``anomalies``, ``trends``)
are in ``results_analysis.py`` and join the group here.

Every subcommand but ``list`` asks the coordinator, or reads a results file
directly with ``--db`` (see ``results_common``). DuckDB, and statsmodels and
scikit-learn for the analyses, are imported only when used, so the other
commands start fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from dtf.cli.output import console, json_option, print_json, with_client
from dtf.cli.render import results_table
from dtf.cli.results_analysis import ANALYSES
from dtf.cli.results_common import db_option, parse_since
from dtf.client import Client

STATISTICS = ("count", "mean", "median", "p90", "p95", "p99", "stddev", "min", "max")


@click.group(invoke_without_command=True)
@click.option("--task", "task_id", help="Only results of this task.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@with_client
@click.pass_context
def results(
    ctx: click.Context, client: Client, task_id: str | None, limit: int, as_json: bool
) -> None:
    """List attempt results (as `dtf results list`), or aggregate or export them.

    `aggregate` and `export` ask the coordinator's API, or read a results file
    directly with --db. DuckDB lets only one process open a file it writes,
    so --db cannot read the file of a running coordinator: use the API then.
    """
    if ctx.invoked_subcommand is None:
        print_results(client, task_id, limit, as_json)


@results.command("list")
@click.option("--task", "task_id", help="Only results of this task.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@with_client
def list_results(client: Client, task_id: str | None, limit: int, as_json: bool) -> None:
    """List attempt results."""
    print_results(client, task_id, limit, as_json)


def print_results(client: Client, task_id: str | None, limit: int, as_json: bool) -> None:
    found = client.results(task_id, limit=limit)
    if as_json:
        print_json({"results": found})
    else:
        console.print(results_table(found))


@results.command("aggregate")
@click.option(
    "--by",
    default="model,hardware",
    show_default=True,
    help="Comma-separated dimensions: model, hardware, device, batch_size, precision, "
    "worker, run_id, commit, config, metric.",
)
@click.option("--metric", help="Metric name, e.g. latency_ms_median (* globs) [default: all].")
@click.option("--run", "run_id", help="Only samples of this run_id label.")
@click.option("--since", help="Only samples recorded since: epoch seconds or e.g. 24h, 7d.")
@db_option
@json_option
@with_client
def aggregate_command(
    client: Client,
    by: str,
    metric: str | None,
    run_id: str | None,
    since: str | None,
    db_path: Path | None,
    as_json: bool,
) -> None:
    """count, mean, median, p90, p95, p99, stddev, min and max per group of dimensions."""
    dimensions = [name.strip() for name in by.split(",") if name.strip()]
    since_s = parse_since(since, time.time())
    if db_path is None:
        reply = client.aggregate_results(dimensions, metric=metric, run_id=run_id, since=since_s)
        groups: list[dict[str, Any]] = reply["groups"]
    else:
        groups = aggregate_file(db_path, dimensions, metric, run_id, since_s)
    if as_json:
        print_json({"by": dimensions, "metric": metric, "groups": groups})
    else:
        console.print(aggregate_table(groups))


def aggregate_file(
    db_path: Path, by: list[str], metric: str | None, run_id: str | None, since: float | None
) -> list[dict[str, Any]]:
    from dtf.results.queries import Filters, aggregate
    from dtf.results.store import ResultsStore

    store = ResultsStore.open(db_path, read_only=True)
    try:
        with store.reader() as cursor:
            return aggregate(cursor, by, Filters(metric=metric, run_id=run_id, since=since))
    finally:
        store.close()


def aggregate_table(groups: list[dict[str, Any]]) -> Table:
    dimensions = [name for name in (groups[0] if groups else {}) if name not in STATISTICS]
    table = Table(*dimensions, *STATISTICS)
    for group in groups:
        cells = [str(group[name]) for name in dimensions]
        table.add_row(*cells, *(number_text(group[name]) for name in STATISTICS))
    return table


def number_text(value: Any) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4g}"


@results.command("export")
@click.option(
    "--format", "file_format", required=True, type=click.Choice(["parquet", "csv", "json"])
)
@click.option(
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write.",
)
@click.option(
    "--table",
    default="metric_samples",
    show_default=True,
    help="tasks, attempts, metric_samples, test_cases, worker_snapshots, regression_alerts "
    "or runs.",
)
@db_option
@with_client
def export_command(
    client: Client, file_format: str, output: Path, table: str, db_path: Path | None
) -> None:
    """Write one results table to a Parquet, CSV or JSON (array) file."""
    if db_path is None:
        size = client.export_results(output, table=table, file_format=file_format)
        click.echo(f"wrote {table} to {output} ({size} bytes)")
        return
    rows = export_file(db_path, table, file_format, output)
    click.echo(f"wrote {rows} rows of {table} to {output}")


def export_file(db_path: Path, table: str, file_format: str, output: Path) -> int:
    from dtf.results.export import export_table
    from dtf.results.store import ResultsStore

    store = ResultsStore.open(db_path, read_only=True)
    try:
        with store.reader() as cursor:
            return export_table(cursor, table, file_format, output.resolve())
    finally:
        store.close()


for _analysis in ANALYSES:
    results.add_command(_analysis)
