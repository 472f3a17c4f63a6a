"""``dtf submit``: build specs from flags or a task file, submit them, optionally wait."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dtf.cli import specs
from dtf.cli.output import console, json_option, parse_pairs, print_json, with_client
from dtf.cli.task_view import any_problems, poll_summary, result_line
from dtf.client import Client


def source_specs(
    command: str | None,
    test_file: Path | None,
    test_args: str | None,
    benchmark: str | None,
    params: tuple[str, ...],
    task_file: Path | None,
) -> list[specs.Spec]:
    chosen = [x for x in (command, test_file, benchmark, task_file) if x is not None]
    if len(chosen) != 1:
        raise click.UsageError(
            "give exactly one of --command, --test-file, --benchmark or --task-file"
        )
    if test_args is not None and test_file is None:
        raise click.UsageError("--test-args goes with --test-file")
    if params and benchmark is None:
        raise click.UsageError("--param goes with --benchmark")
    if command is not None:
        return [specs.spec_for_command(command)]
    if test_file is not None:
        return [specs.spec_for_test_file(test_file, test_args)]
    if benchmark is not None:
        return [specs.spec_for_benchmark(benchmark, parse_pairs(params, "--param"))]
    assert task_file is not None
    return specs.specs_from_file(task_file)


def wait_and_report(client: Client, task_ids: list[str], timeout_s: float, as_json: bool) -> int:
    """Wait with a spinner, print one line per task; 1 when any failed or has failing tests."""
    with console.status("waiting...") as spinner:
        tasks = client.wait(
            task_ids,
            timeout_s=timeout_s,
            on_poll=lambda current: spinner.update(poll_summary(current)),
        )
    problems = any_problems(tasks)
    if as_json:
        print_json({"tasks": tasks, "problems": dict(problems)})
    else:
        for task in tasks:
            console.print(result_line(task), markup=False, soft_wrap=True)
        for task_id, problem in problems:
            console.print(f"[red]{task_id}[/red]: {problem}")
    return 1 if problems else 0


@click.command()
@click.option("--command", help="Shell command to run (by /bin/sh -c on the worker).")
@click.option(
    "--test-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="pytest file to run; its source is sent along.",
)
@click.option("--test-args", help='Extra pytest arguments as one string, e.g. "-k fast -x".')
@click.option("--benchmark", help="Benchmark entry point: module:function or file.py:function.")
@click.option(
    "--param", "params", multiple=True, help="Benchmark parameter KEY=VALUE (JSON value)."
)
@click.option(
    "--task-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSON file: one task spec, a list, or {"tasks": [...]}.',
)
@click.option("--id", "task_id", help="Client-chosen task id (resubmitting it is idempotent).")
@click.option("--name", help="Human-readable task name.")
@click.option("--priority", type=click.IntRange(-1000, 1000), help="Lower runs first (default 5).")
@click.option("--requires", help='Requirements as JSON, e.g. \'{"hardware": ["cuda"]}\'.')
@click.option(
    "--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), help="Seconds."
)
@click.option("--max-retries", type=click.IntRange(0, 100))
@click.option(
    "--retry-on-nonzero-exit", is_flag=True, help="Retry when the command exits non-zero."
)
@click.option("--depends-on", multiple=True, help="Task id this one waits for (repeatable).")
@click.option("--label", "labels", multiple=True, help="Label KEY=VALUE (repeatable).")
@click.option("--reject-unsatisfiable", is_flag=True, help="Refuse if no live worker can run it.")
@click.option("--wait", "wait_for", is_flag=True, help="Wait for the tasks and report results.")
@click.option("--wait-timeout", default=3600.0, show_default=True, help="Seconds to wait.")
@json_option
@with_client
def submit(
    client: Client,
    requires: str | None,
    labels: tuple[str, ...],
    depends_on: tuple[str, ...],
    reject_unsatisfiable: bool,
    wait_for: bool,
    wait_timeout: float,
    as_json: bool,
    **source_and_options: Any,
) -> None:
    """Submit a command, a pytest file, a benchmark or a task file; print the task ids."""
    option_names = ("task_id", "name", "priority", "timeout_s", "max_retries")
    options = specs.SpecOptions(
        requirements=specs.parse_json_object(requires, "--requires") if requires else None,
        retry_on_nonzero_exit=source_and_options.pop("retry_on_nonzero_exit"),
        dependencies=depends_on,
        labels=parse_pairs(labels, "--label"),
        **{name: source_and_options.pop(name) for name in option_names},
    )
    built = specs.apply_options(source_specs(**source_and_options), options)
    task_ids = client.submit_many(built, reject_unsatisfiable=reject_unsatisfiable)
    if not wait_for:
        if as_json:
            print_json({"task_ids": task_ids})
        else:
            click.echo("\n".join(task_ids))
        return
    if not as_json:
        click.echo("\n".join(f"submitted {task_id}" for task_id in task_ids))
    click.get_current_context().exit(wait_and_report(client, task_ids, wait_timeout, as_json))
