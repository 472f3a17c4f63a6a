"""Failover and throughput of a 3-node coordinator cluster on etcd.

Starts 3 etcd members and 3 coordinators on 127.0.0.1 (``dtf.local.ha_cluster``)
and, under a steady write load, SIGKILLs a coordinator or an etcd leader's host
``--kills`` times per kind, timing each kill until the next write is
accepted; then measures committed commands/s and end-to-end tasks/s on the
cluster and on a standalone coordinator (embedded SQLite journal) in the same
run. Prints figures (rich tables, or JSON with ``--json``) next to the targets
of issue 5; asserts nothing. See bench/README.md for what each figure means.

    .venv/bin/python bench/failover.py [--kills 20] [--quick] [--skip throughput]
                                       [--workers 2] [--slots 16,32] [--tasks 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy
from _baseline import measure_limit
from _failover_kills import KINDS, KillRounds, Kind, Round, RoundFailed
from _failover_load import AnyCoordinator, LeaderOnly, Writer
from _failover_throughput import cluster_tasks, each_slot_count, measure_commands, standalone
from _procs import BenchError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dtf.errors import DtfError
from dtf.local.ha_cluster import HaCluster, HaSettings

SKIPPABLE = (*KINDS, "throughput")
# (kind, writer, target): the rows of the kill table
KILL_ROWS = (
    ("serving", "any", "coordinator"),
    ("leader", "leader-only", "coordinator"),
    ("leader", "any", "coordinator"),
    ("host", "any", "host"),
    ("host", "leader-only", "host"),
)
KIND_LABELS = {
    "serving": "client's coordinator",
    "leader": "leader coordinator",
    "host": "etcd leader's host",
}
WRITER_LABELS = {"any": "any-coordinator", "leader-only": "leader-only"}
TARGETS = {
    "coordinator": {"p50_s": 1.0, "max_s": 2.0, "stretch_s": 0.3},
    "host": {"p50_s": 1.5, "max_s": 2.5},
}
TASKS_TARGET_PER_S = 1000.0
WIDTH = 120  # the tables' columns, unsqueezed, when the output is not a terminal
stderr = Console(stderr=True)


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills per kind")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 kills per kind, shorter loads, the smallest --slots only",
    )
    parser.add_argument("--skip", default="", help=f"comma-separated, from {','.join(SKIPPABLE)}")
    parser.add_argument(
        "--write-interval", type=float, default=0.01, help="pause after each acknowledged write, s"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per commands/s measurement")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight, commands/s"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes, tasks/s")
    parser.add_argument(
        "--slots",
        type=slot_counts,
        default="16,32",
        help="concurrent tasks per worker, comma-separated: tasks/s is measured at each",
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=10_000,
        help="tasks per tasks/s run: about 10 s, a sustained rate (2,000 last about 2 s, "
        "and read 10-15%% lower on the cluster)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="bound on each wait, s")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    parser.add_argument("--log-level", default="warning", help="the coordinators' log level")
    options = parser.parse_args()
    if options.quick:
        options.kills, options.seconds, options.tasks = 3, 2.0, 1000
        options.slots = options.slots[:1]
    options.skip = {name.strip() for name in options.skip.split(",") if name.strip()}
    unknown = options.skip - set(SKIPPABLE)
    if unknown:
        parser.error(f"--skip {','.join(sorted(unknown))}: choose from {','.join(SKIPPABLE)}")
    if (
        not options.slots
        or min(options.kills, options.workers, *options.slots, options.tasks, options.concurrency)
        < 1
    ):
        parser.error("--kills, --workers, --slots, --tasks and --concurrency must be at least 1")
    return options


def slot_counts(text: str) -> list[int]:
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers, e.g. 16,32") from None


def attempt(what: str, measure: Callable[[], Any]) -> Any:
    """Run one measurement; one that cannot run is reported, not fatal."""
    stderr.print(f"[dim]{what} ...[/dim]")
    try:
        return measure()
    except (BenchError, DtfError, RoundFailed) as error:
        stderr.print(f"[red]{what} failed:[/red] {escape(str(error))}")
        return {"error": str(error)}


def measure_all(options: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "config": {
            key: sorted(value) if isinstance(value, set) else value
            for key, value in vars(options).items()
        },
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg(),
    }
    if "throughput" not in options.skip:
        figures["limit"] = attempt(
            f"the limit: {options.workers} processes spawning `true`",
            lambda: {"tasks_per_s": measure_limit(options.workers, options.tasks)},
        )
        figures["standalone"] = attempt(
            "standalone coordinator: commands/s, tasks/s",
            lambda: standalone(work_dir, options, "single"),
        )
    settings = HaSettings(
        data_dir=work_dir / "cluster",
        workers=options.workers,
        slots=options.slots[0],
        base_port=0,
        log_level=options.log_level,
        startup_timeout_s=options.timeout,
    )
    cluster = HaCluster(settings, on_event)
    try:
        started = attempt("starting 3 etcd members and 3 coordinators", lambda: start(cluster))
        if started is not None:
            figures["cluster"] = started
            return figures
        if "throughput" not in options.skip:
            figures["cluster"] = attempt(
                "cluster: tasks/s, commands/s", lambda: cluster_throughput(cluster, options)
            )
        kinds = [kind for kind in KINDS if kind not in options.skip]
        if kinds:
            figures["kills"] = attempt(
                f"{options.kills} kills of each: {', '.join(kinds)}",
                lambda: kill_figures(cluster, kinds, options),
            )
    finally:
        cluster.stop()
        figures["load_average_after"] = os.getloadavg()
    return figures


def on_event(kind: str, fields: dict[str, Any]) -> None:
    if kind == "notice":
        stderr.print(f"[dim]{escape(str(fields.get('text')))}[/dim]")


def start(cluster: HaCluster) -> None:
    """etcd and the coordinators only: no workers (the tasks/s run starts them), and
    no supervisors (the kill rounds restart what they kill themselves)."""
    cluster.start_etcd()
    cluster.start_coordinators()
    cluster.wait_formed()


def cluster_throughput(cluster: HaCluster, options: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "tasks": each_slot_count(
            options.slots,
            lambda slots: cluster_tasks(
                cluster, slots, options.tasks, options.workers * slots * 2, options.timeout
            ),
        )
    }
    with cluster.http_client() as http:
        leader = cluster.current_leader(http)
    spread = measure_commands(
        cluster.urls, cluster.admin_key, options.seconds, options.concurrency, "spread"
    )
    figures["commands"] = {"spread": spread}
    if leader is not None:
        figures["commands"]["leader"] = measure_commands(
            [leader["url"]], cluster.admin_key, options.seconds, options.concurrency, "leader"
        )
    return figures


def kill_figures(
    cluster: HaCluster, kinds: list[Kind], options: argparse.Namespace
) -> dict[str, Any]:
    writers = [
        Writer(AnyCoordinator(cluster.urls, cluster.admin_key), options.write_interval),
        Writer(LeaderOnly(cluster.urls, cluster.admin_key), options.write_interval),
    ]
    for writer in writers:
        writer.start()
    rounds = KillRounds(cluster, writers, options.timeout)
    done: list[Round] = []
    stopped_early = None
    try:
        for number, kind in enumerate(schedule(kinds, options.kills), start=1):
            done.append(rounds.run(kind))
            stderr.print(f"[dim]kill {number}: {round_text(done[-1])}[/dim]")
            stranded = [name for name, gap in done[-1].gaps_s.items() if gap is None]
            if stranded:
                raise RoundFailed(
                    f"{', '.join(stranded)}: no write accepted within {options.timeout:g} s "
                    "of the kill"
                )
    except RoundFailed as error:
        stopped_early = f"after {len(done)} kills: {error}"
        stderr.print(f"[red]kill rounds stopped {escape(stopped_early)}[/red]")
    finally:
        for writer in writers:
            writer.stop()
    return {
        "rounds": [r.as_json() for r in done],
        "stopped_early": stopped_early,
        "summary": summarize(done),
        "writes_acknowledged": {w.name: w.acks for w in writers},
        "writes_failed": {w.name: dict(w.failures) for w in writers},
    }


def schedule(kinds: list[Kind], kills: int) -> list[Kind]:
    """Coordinator kills take turns, so drift in the machine's load spreads over both
    kinds; the etcd leader's host kills come after them."""
    turns = [kind for _ in range(kills) for kind in kinds if kind != "host"]
    return turns + [kind for kind in kinds if kind == "host"] * kills


def round_text(done: Round) -> str:
    gaps = ", ".join(
        f"{name} {'-' if gap is None else f'{gap:.3f} s'}" for name, gap in done.gaps_s.items()
    )
    leader = " (leader)" if done.was_leader else ""
    return f"{done.kind}: killed {done.node_id}{leader}; {gaps}; back in {done.restart_s:.1f} s"


def summarize(done: list[Round]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for kind, writer, target in KILL_ROWS:
        rounds = [r for r in done if r.kind == kind]
        if not rounds:
            continue
        gaps = [r.gaps_s[writer] for r in rounds]
        measured = numpy.array([gap for gap in gaps if gap is not None])
        figures: dict[str, Any] = {
            "kind": kind,
            "writer": writer,
            "target": target,
            "kills": len(rounds),
            "leader_kills": sum(r.was_leader for r in rounds),
            "missed": sum(gap is None for gap in gaps),
        }
        if measured.size:
            figures.update(
                p50_s=float(numpy.percentile(measured, 50)),
                p99_s=float(numpy.percentile(measured, 99)),
                max_s=float(measured.max()),
            )
        summary[f"{kind}/{writer}"] = figures
    summary["ratios"] = ratios(summary)
    return summary


def ratios(summary: dict[str, Any]) -> dict[str, float]:
    """Leader-only writes over any-coordinator appends: the client's own coordinator
    killed (the leader, for a leader-only client), and the etcd leader's host killed."""
    pairs = {
        "own_coordinator_killed": ("leader/leader-only", "serving/any"),
        "etcd_leader_host_killed": ("host/leader-only", "host/any"),
    }
    found: dict[str, float] = {}
    for name, (slow, fast) in pairs.items():
        for stat in ("p50_s", "max_s"):
            numerator = summary.get(slow, {}).get(stat)
            denominator = summary.get(fast, {}).get(stat)
            if numerator is not None and denominator:
                found[f"{name}_{stat[:-2]}"] = numerator / denominator
    return found


def render(figures: dict[str, Any]) -> None:
    console = Console(width=max(Console().width, WIDTH))
    kills = figures.get("kills")
    if kills and "error" not in kills:
        console.print(kill_table(kills["summary"]))
        if kills["stopped_early"]:
            console.print(f"[red]kill rounds stopped {escape(kills['stopped_early'])}[/red]")
        for line in ratio_lines(kills["summary"]["ratios"]):
            console.print(line)
        acked, failed = kills["writes_acknowledged"], kills["writes_failed"]
        for name in acked:
            tries = ", ".join(f"{why} {count:,}" for why, count in failed[name].items())
            console.print(
                f"{WRITER_LABELS[name]}: {acked[name]:,} writes acknowledged during the kill "
                f"rounds; failed tries: {tries or 'none'}"
            )
    if "standalone" in figures or "cluster" in figures:
        console.print(commands_table(figures))
        console.print(tasks_table(figures))
        console.print(
            f"tasks/s limit on this machine, {figures['config']['workers']} processes each "
            f"running `true` back to back, no scheduler: {task_cell(figures.get('limit'))}"
        )
        for name in ("standalone", "cluster"):
            for slots, tasks in tasks_by_slots(figures, name).items():
                spent = tasks.get("cpu_ms_per_task")
                if spent:
                    parts = ", ".join(
                        f"{role} {ms:.2f}" for role, ms in spent.items() if ms >= 0.005
                    )
                    console.print(f"CPU per task end to end, ms, {name}, {slots} slots: {parts}")
    before, after = figures["load_average_before"], figures["load_average_after"]
    console.print(
        f"{figures['cpus']} CPUs; load average (1, 5, 15 min) before "
        f"{', '.join(f'{v:.1f}' for v in before)}, after {', '.join(f'{v:.1f}' for v in after)}"
    )


def kill_table(summary: dict[str, Any]) -> Table:
    table = Table(title="SIGKILL → next accepted write, seconds")
    columns = ("killed", "client", "kills (leader)", "p50", "p99", "max", "target p50/max", "met")
    for column in columns:
        table.add_column(column, justify="left" if column in ("killed", "client") else "right")
    for key, row in summary.items():
        if key == "ratios":
            continue
        target = TARGETS[row["target"]]
        values = [row.get(stat) for stat in ("p50_s", "p99_s", "max_s")]
        cells = ["-" if v is None else f"{v:.3f}" for v in values]
        if row["missed"]:
            cells[2] = f"{row['missed']} never"
        table.add_row(
            KIND_LABELS[row["kind"]],
            WRITER_LABELS[row["writer"]],
            f"{row['kills']} ({row['leader_kills']})",
            *cells,
            target_text(target),
            verdict(row, target),
        )
    return table


def target_text(target: dict[str, float]) -> str:
    text = f"≤{target['p50_s']:.1f} / ≤{target['max_s']:.1f}"
    if "stretch_s" in target:
        text += f" (<{target['stretch_s']:.1f})"
    return text


def verdict(row: dict[str, Any], target: dict[str, float]) -> str:
    if row["missed"] or "p50_s" not in row:
        return "no"
    met = row["p50_s"] <= target["p50_s"] and row["max_s"] <= target["max_s"]
    text = "yes" if met else "no"
    if "stretch_s" in target and row["writer"] == "any":
        stretch = row["max_s"] < target["stretch_s"]
        text += "; stretch " + (
            "yes" if stretch else "p50" if row["p50_s"] < target["stretch_s"] else "no"
        )
    return text


def ratio_lines(found: dict[str, float]) -> list[str]:
    lines = []
    if "own_coordinator_killed_p50" in found:
        lines.append(
            "leader-only writes / any-coordinator appends, the client's own coordinator killed: "
            f"p50 {found['own_coordinator_killed_p50']:.1f}x, "
            f"max {found.get('own_coordinator_killed_max', float('nan')):.1f}x"
        )
    if "etcd_leader_host_killed_p50" in found:
        lines.append(
            "leader-only writes / any-coordinator appends, the etcd leader's host killed: "
            f"p50 {found['etcd_leader_host_killed_p50']:.1f}x, "
            f"max {found.get('etcd_leader_host_killed_max', float('nan')):.1f}x"
        )
    return lines


def commands_table(figures: dict[str, Any]) -> Table:
    table = Table(title="Committed commands, same run")
    columns = ("system", "commands/s", "p50 ms", "p99 ms", "client CPU")
    for column in columns:
        table.add_column(column, justify="left" if column == "system" else "right")
    single, cluster = figures.get("standalone", {}), figures.get("cluster", {})
    rows = (
        ("standalone (SQLite)", single.get("commands")),
        ("cluster, to all nodes", cluster.get("commands", {}).get("spread")),
        ("cluster, to the leader", cluster.get("commands", {}).get("leader")),
    )
    for label, commands in rows:
        table.add_row(label, *command_cells(commands))
    for source in (single, cluster):
        if "error" in source:
            table.add_row("[red]error[/red]", escape(source["error"][:300]), "", "", "")
    single_commands = single.get("commands", {}).get("commands_per_s")
    spread = cluster.get("commands", {}).get("spread", {}).get("commands_per_s")
    ratio = f"{spread / single_commands:.2f}" if spread and single_commands else "-"
    table.add_row("cluster / standalone", ratio, "", "", "")
    return table


def tasks_table(figures: dict[str, Any]) -> Table:
    workers = figures["config"]["workers"]
    table = Table(title=f"Tasks/s end to end, {workers} workers, same run")
    columns = ("slots per worker", "standalone (SQLite)", "cluster", "cluster / standalone", "met")
    for column in columns:
        table.add_column(column, justify="right")
    single = tasks_by_slots(figures, "standalone")
    cluster = tasks_by_slots(figures, "cluster")
    for slots in figures["config"]["slots"]:
        one, many = single.get(str(slots), {}), cluster.get(str(slots), {})
        single_rate, cluster_rate = one.get("tasks_per_s"), many.get("tasks_per_s")
        ratio = f"{cluster_rate / single_rate:.2f}" if cluster_rate and single_rate else "-"
        met = "-" if cluster_rate is None else "yes" if cluster_rate >= TASKS_TARGET_PER_S else "no"
        table.add_row(str(slots), task_cell(one), task_cell(many), ratio, met)
    table.add_row("target (cluster)", "", f"≥ {TASKS_TARGET_PER_S:,.0f}", "", "")
    for name, by_slots in (("standalone", single), ("cluster", cluster)):
        for slots, tasks in by_slots.items():
            if "error" in tasks:
                table.add_row(
                    f"[red]{slots}: {name}[/red]", escape(tasks["error"][:300]), "", "", ""
                )
    return table


def tasks_by_slots(figures: dict[str, Any], system: str) -> dict[str, dict[str, Any]]:
    tasks = figures.get(system, {}).get("tasks", {})
    return tasks if isinstance(tasks, dict) else {}


def command_cells(commands: dict[str, Any] | None) -> list[str]:
    if not commands or "commands_per_s" not in commands:
        return ["-", "-", "-", "-"]
    p50, p99 = commands["latency_p50_s"], commands["latency_p99_s"]
    return [
        f"{commands['commands_per_s']:,.0f}",
        "-" if p50 is None else f"{1000 * p50:.1f}",
        "-" if p99 is None else f"{1000 * p99:.1f}",
        f"{commands['client_cpu_share']:.2f}",
    ]


def task_cell(tasks: dict[str, Any] | None) -> str:
    if not tasks or "tasks_per_s" not in tasks:
        return "-"
    return f"{tasks['tasks_per_s']:,.0f}"


def main() -> None:
    options = parse_options()
    if options.keep:
        work_dir = tempfile.mkdtemp(prefix="dtf-failover-")
        stderr.print(f"data dirs and logs stay in {work_dir}")
        figures = measure_all(options, Path(work_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="dtf-failover-") as work_dir:
            figures = measure_all(options, Path(work_dir))
    if options.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
    else:
        render(figures)


if __name__ == "__main__":
    main()
