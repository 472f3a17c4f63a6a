"""The analyses of ``dtf results``: regressions, compare, flaky, anomalies, trends.

Each asks the coordinator, or reads a results file with ``--db``; the
analysis libraries are imported inside the commands that need them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from dtf.analysis.units import SPEED_UNITS
from dtf.cli.output import console, json_option, print_json, with_client
from dtf.cli.results_common import cell, db_option, from_file, parse_since
from dtf.client import Client

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


@click.command("regressions")
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


@click.command("compare")
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


@click.command("flaky")
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


@click.command("anomalies")
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


@click.command("trends")
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


ANALYSES = [regressions_command, compare_command, flaky_command, anomalies_command, trends_command]
