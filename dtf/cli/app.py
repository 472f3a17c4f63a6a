"""The ``dtf`` command group and its error handling.

Any ``DtfError`` a command raises ends as one line on stderr that says what
to do next, and exit status 1; no traceback reaches the user.
"""

from __future__ import annotations

import logging

import click

from dtf import __version__
from dtf.cli import cluster, failures, inspect, local, report, results, serve, submit, workers
from dtf.errors import DtfError, Forbidden, Unauthorized


def error_text(exc: DtfError) -> str:
    """The error's message plus a hint where the fix is a flag or variable away."""
    message = exc.message
    if isinstance(exc, Unauthorized):
        return f"{message} (pass --api-key or set DTF_API_KEY)"
    if isinstance(exc, Forbidden):
        return f"{message} (this key's role may not do that; use a key with the right role)"
    return message


class DtfGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except DtfError as exc:
            raise click.ClickException(error_text(exc)) from None


@click.group(name="dtf", cls=DtfGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dtf")
def cli() -> None:
    """dtf: run tests and benchmarks across a fleet of workers.

    Start a local cluster with `dtf up` (or see it work with `dtf demo`), then
    submit work with `dtf submit` and watch it with `dtf tasks` and `dtf task show`.
    Commands that talk to a coordinator read DTF_COORDINATOR and DTF_API_KEY.
    """


for command in (
    serve.coordinator,
    serve.worker,
    local.up,
    local.demo,
    submit.submit,
    inspect.tasks,
    inspect.task,
    workers.workers,
    inspect.status,
    results.results,
    report.report,
    inspect.keys,
    failures.failures,
    cluster.cluster,
):
    cli.add_command(command)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cli(prog_name="dtf")
