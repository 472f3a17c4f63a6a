"""``dtf results``: list attempt results, aggregate metrics, export tables, and the
analyses: ``regressions``, ``compare``, ``flaky``, ``anomalies``, ``trends``.

Every subcommand but ``list`` asks the coordinator, or reads a results file
directly with ``--db``. DuckDB lets only one process open a file for
writing, so ``--db`` on the file of a running coordinator fails: use the
API then, or a copy of the file. (DuckDB, and statsmodels and scikit-learn for
the analyses, are imported only when used, so the other commands start fast.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from dtf.cli.output import console, json_option, print_json, with_client
from dtf.cli.render import results_table
from dtf.client import Client

STATISTICS = ("count", "mean", "median", "p90", "p95", "p99", "stddev", "min", "max")
DURATION_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DB_HELP = (
    "Read this results file directly instead of asking the coordinator "
    "(not the file of a running coordinator: DuckDB allows one writer process)."
)
db_option = click.option(
    "--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help=DB_HELP
)


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


def parse_since(text: str | None, now: float) -> float | None:
    """``"24h"`` -> 24 hours before ``now``; ``"1732300000"`` -> that epoch second."""
    if text is None:
        return None
    unit = DURATION_UNITS_S.get(text[-1:])
    try:
        return now - float(text[:-1]) * unit if unit else float(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither epoch seconds nor a duration like 30m, 24h, 7d",
            param_hint="--since",
        ) from None


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


def from_file(db_path: Path, query: Callable[[Any], Any]) -> Any:
    """``query(cursor)`` on a results file, as the JSON the API would have sent."""
    import msgspec

    from dtf.results.store import ResultsStore

    store = ResultsStore.open(db_path, read_only=True)
    try:
        with store.reader() as cursor:
            return msgspec.json.decode(msgspec.json.encode(query(cursor)))
    finally:
        store.close()


def cell(text: Any, style: str = "") -> Text:
    """Table text taken literally (test ids hold brackets that are not markup)."""
    return Text("-" if text is None else str(text), style=style)


SPEED_UNITS = frozenset({"ms", "us", "s", "1/s", "GFLOP/s", "gflops"})
KIND_STYLES = {"regression": "red", "improvement": "green", "change": "yellow"}
VERDICT_STYLES = {
    "regressed": "red",
    "newly failing": "red",
    "worsening": "red",
    "improved": "green",
    "fixed": "green",
    "improving": "green",
    "unknown": "yellow",
    "changed": "yellow",
    "rising": "yellow",
    "falling": "yellow",
}


def series_text(labels: dict[str, Any]) -> str:
    """``resnet cuda (A100) bs=8 fp16`` from a series' labels or key."""
    parts = [str(labels.get("model") or ""), str(labels.get("hardware_class") or "")]
    if labels.get("device_model"):
        parts.append(f"({labels['device_model']})")
    if labels.get("batch_size") not in (None, ""):
        parts.append(f"bs={labels['batch_size']}")
    parts.append(str(labels.get("precision") or ""))
    if labels.get("config") not in (None, "", "{}"):
        parts.append(str(labels["config"]))
    return " ".join(part for part in parts if part)


def interval_text(median: float, interval: list[float]) -> str:
    return f"{median:.4g} [{interval[0]:.4g}, {interval[1]:.4g}]"


@results.command("regressions")
@click.option("--since", help="Only changes dated since: epoch seconds or e.g. 24h, 7d.")
@click.option("--metric", help="Metric name (* globs) [default: every metric].")
@click.option("--min-change", default=0.02, show_default=True, help="Minimum relative change.")
@db_option
@json_option
@with_client
def regressions_command(
    client: Client,
    since: str | None,
    metric: str | None,
    min_change: float,
    db_path: Path | None,
    as_json: bool,
) -> None:
    """Change points of every metric series (Benjamini-Hochberg over all of them), grouped
    by the commit range they fall in; environment changes are named, not compared."""
    since_s = parse_since(since, time.time())
    if db_path is None:
        report = client.regressions(metric=metric, since=since_s, min_change=min_change)
    else:
        from dtf.results import insights
        from dtf.results.queries import Filters

        report = from_file(
            db_path,
            lambda cursor: insights.regressions(
                cursor, Filters(metric=metric), since=since_s, min_relative_change=min_change
            ),
        )
    if as_json:
        print_json(report)
        return
    console.print(regressions_table(report))
    for change in report["refused"]:
        console.print(
            cell(
                f"not compared: {change['metric']} of {series_text(dict(change['labels']))} "
                f"between {change['last_key']} and {change['first_key']}: "
                + "; ".join(change["differences"]),
                "yellow",
            )
        )


def regressions_table(report: dict[str, Any]) -> Table:
    table = Table("commits", "metric", "series", "before", "after", "change", "q", "kind")
    table.title = f"{len(report['alerts'])} alerts from {report['tests']} tests"
    for group in report["groups"]:
        commits = f"{group['last_good_key']}..{group['first_bad_key']}"
        for alert in group["alerts"]:
            style = KIND_STYLES.get(alert["kind"], "")
            table.add_row(
                cell(commits),
                cell(alert["metric"]),
                cell(series_text(dict(alert["labels"]))),
                cell(interval_text(alert["before_median"], alert["before_interval"])),
                cell(interval_text(alert["after_median"], alert["after_interval"])),
                cell(percent_text(alert["relative_change"]), style),
                cell(f"{alert['q_value']:.2g}"),
                cell(alert["kind"], style),
            )
    return table


def percent_text(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:+.1f} %"


@results.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@db_option
@json_option
@with_client
def compare_command(
    client: Client, run_a: str, run_b: str, db_path: Path | None, as_json: bool
) -> None:
    """Compare run B with run A (run_id labels): per metric the change with its bootstrap
    interval and a verdict, per test the failures; metrics measured on different hardware
    are refused."""
    if db_path is None:
        comparison = client.compare_runs(run_a, run_b)
    else:
        from dtf.results import insights

        comparison = from_file(db_path, lambda cursor: insights.compare_runs(cursor, run_a, run_b))
    if as_json:
        print_json(comparison)
        return
    if comparison["metrics"]:
        console.print(metrics_table(comparison))
    if comparison["tests"]:
        console.print(tests_table(comparison["tests"]))
    for refused in comparison["refused"]:
        console.print(cell(refused["message"], "yellow"))


def metrics_table(comparison: dict[str, Any]) -> Table:
    table = Table("metric", "series", "before", "after", "change", "verdict")
    table.title = f"{comparison['run_a']} -> {comparison['run_b']}"
    for metric in comparison["metrics"]:
        c = metric["comparison"]
        words, style = verdict_text(c)
        unit = f" {c['unit']}" if c["unit"] else ""
        series = series_text({**metric["key"], **metric["environment"]})
        table.add_row(
            cell(c["metric"]),
            cell(series),
            cell(f"{c['median_a']:.4g}{unit} (n={c['count_a']})"),
            cell(f"{c['median_b']:.4g}{unit} (n={c['count_b']})"),
            cell(change_text(c), style),
            cell(words, style),
        )
    return table


def verdict_text(c: dict[str, Any]) -> tuple[str, str]:
    verdict = c["verdict"]
    if verdict == "unknown":
        more = c["more_repeats"]
        return (f"unknown, run {more} more repeats" if more else "unknown"), "yellow"
    if verdict in ("improved", "regressed") and c["unit"] in SPEED_UNITS:
        return ("faster" if verdict == "improved" else "slower"), VERDICT_STYLES[verdict]
    return verdict, VERDICT_STYLES.get(verdict, "")


def change_text(c: dict[str, Any]) -> str:
    if c["relative_change"] is not None and c["relative_interval"] is not None:
        low, high = c["relative_interval"]
        return (
            f"{percent_text(c['relative_change'])} (CI {percent_text(low)}..{percent_text(high)})"
        )
    low, high = c["change_interval"]
    return f"{c['change']:+.4g} (CI {low:+.4g}..{high:+.4g})"


def tests_table(tests: list[dict[str, Any]]) -> Table:
    table = Table("test", "failed in A", "failed in B", "p", "verdict")
    for test in tests:
        style = VERDICT_STYLES.get(test["verdict"], "")
        more = f", run {test['more_repeats']} more" if test["more_repeats"] else ""
        table.add_row(
            cell(test["node_id"]),
            cell(f"{test['failed_a']}/{test['failed_a'] + test['passed_a']}"),
            cell(f"{test['failed_b']}/{test['failed_b'] + test['passed_b']}"),
            cell(None if test["p_value"] is None else f"{test['p_value']:.2g}"),
            cell(test["verdict"] + more, style),
        )
    return table


@results.command("flaky")
@click.option("--since", help="Only attempts since: epoch seconds or e.g. 24h, 7d.")
@db_option
@json_option
@with_client
def flaky_command(client: Client, since: str | None, db_path: Path | None, as_json: bool) -> None:
    """Tests that both passed and failed on one commit (or run), reruns included, with the
    flake rate's interval, the flip rate, where they flake and the last failure."""
    since_s = parse_since(since, time.time())
    if db_path is None:
        found = client.flaky_tests(since=since_s)
    else:
        from dtf.results import insights

        found = from_file(db_path, lambda cursor: insights.flaky_tests(cursor, since=since_s))
    if as_json:
        print_json({"flaky": found})
        return
    table = Table("test", "flake rate", "flaky revisions", "flip rate", "hardware", "last failure")
    for test in found:
        overall = test["overall"]
        low, high = overall["interval"]
        message = (test["last_failure_message"].strip().splitlines() or [""])[0][:80]
        table.add_row(
            cell(test["node_id"]),
            cell(f"{100 * overall['flake_rate']:.0f} % [{100 * low:.0f}, {100 * high:.0f}]"),
            cell(f"{overall['flaky_revisions']}/{overall['revisions']}"),
            cell(f"{test['flip_rate']:.2f}"),
            cell(flaky_hardware(test)),
            cell(message, "red"),
        )
    console.print(table)


def flaky_hardware(test: dict[str, Any]) -> str:
    if test["only_on"]:
        return "only on " + ", ".join(test["only_on"])
    return ", ".join(sorted(test["hardware"]))


@results.command("anomalies")
@click.option("--since", help="Only results since: epoch seconds or e.g. 24h, 7d.")
@db_option
@json_option
@with_client
def anomalies_command(
    client: Client, since: str | None, db_path: Path | None, as_json: bool
) -> None:
    """Outliers: robust z-scores of task durations and metric series, and an isolation
    forest over the workers (median duration, failure rate, attempts)."""
    since_s = parse_since(since, time.time())
    if db_path is None:
        findings = client.anomalies(since=since_s)
    else:
        from dtf.results import insights

        findings = from_file(db_path, lambda cursor: insights.anomalies(cursor, since=since_s))
    if as_json:
        print_json(findings)
        return
    table = Table("subject", "where", "point", "score", "why")
    table.title = f"{findings['groups_checked']} groups checked"
    for group in findings["groups"]:
        for anomaly in group["report"]["anomalies"]:
            table.add_row(
                cell(group["subject"]),
                cell(series_text(group["key"]) or "-"),
                cell(anomaly["label"]),
                cell(f"{anomaly['score']:.2f}", "red"),
                cell(anomaly["summary"]),
            )
    console.print(table)
    console.print(cell(findings["groups"][-1]["report"]["summary"]))


@results.command("trends")
@click.option("--metric", help="Metric name (* globs) [default: every metric].")
@click.option("--steps", default=5, show_default=True, type=click.IntRange(1, 100))
@db_option
@json_option
@with_client
def trends_command(
    client: Client, metric: str | None, steps: int, db_path: Path | None, as_json: bool
) -> None:
    """Per series: the slope per result with its interval, and a forecast ``steps`` ahead."""
    if db_path is None:
        found = client.trends(metric=metric, steps=steps)
    else:
        from dtf.results import insights
        from dtf.results.queries import Filters

        found = from_file(
            db_path, lambda cursor: insights.trends(cursor, Filters(metric=metric), steps=steps)
        )
    if as_json:
        print_json({"trends": found})
        return
    table = Table("metric", "series", "points", "slope per result", "verdict", "forecast")
    for entry in found:
        trend = entry["trend"]
        style = VERDICT_STYLES.get(trend["verdict"], "")
        slope = "-"
        if trend["slope"] is not None:
            low, high = trend["slope_interval"]
            slope = f"{trend['slope']:+.4g} [{low:+.4g}, {high:+.4g}]"
        forecast = trend["forecast"]
        table.add_row(
            cell(trend["metric"]),
            cell(series_text(entry["key"])),
            cell(trend["points"]),
            cell(slope, style),
            cell(trend["verdict"], style),
            cell(f"{forecast['mean'][-1]:.4g} in {forecast['steps']}" if forecast else None),
        )
    console.print(table)
