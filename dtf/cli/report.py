"""``dtf report RUN_ID --format html|md|json|junit``: one run's report.

Through the coordinator's API by default, or from a results file with
``--db`` (not the file of a running coordinator: DuckDB allows one writer
process). Without ``--output`` the report goes to stdout, so
``dtf report nightly-7 --format md >> "$GITHUB_STEP_SUMMARY"`` works.
"""

from __future__ import annotations

from pathlib import Path

import click

from dtf.cli.output import with_client
from dtf.cli.results_common import db_option
from dtf.client import Client

FORMATS = ("html", "md", "json", "junit")


@click.command("report")
@click.argument("run_id")
@click.option(
    "--format",
    "report_format",
    type=click.Choice(FORMATS),
    default="html",
    show_default=True,
    help="html (Plotly charts, one offline file), md (CI summary), json, junit (XML).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write [default: stdout].",
)
@db_option
@with_client
def report(
    client: Client, run_id: str, report_format: str, output: Path | None, db_path: Path | None
) -> None:
    """The report of the tasks labelled run_id=RUN_ID: charts, metrics, tests, failures."""
    if db_path is None:
        text = client.report(run_id, report_format)
    else:
        text = report_from_file(db_path, run_id, report_format)
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote the {report_format} report of run {run_id} to {output}", err=True)


def report_from_file(db_path: Path, run_id: str, report_format: str) -> str:
    from dtf.reports.formats import make_report
    from dtf.results.store import ResultsStore

    store = ResultsStore.open(db_path, read_only=True)
    try:
        with store.reader() as cursor:
            return make_report(cursor, run_id, report_format)
    finally:
        store.close()
