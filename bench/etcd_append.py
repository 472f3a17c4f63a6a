"""What one append to the etcd log costs, by entries per append.

Starts a 3-member etcd cluster on 127.0.0.1 (``dtf.testing.etcd.EtcdCluster``) and
appends ``--entries`` command-sized entries (``--entry-bytes``, 300 by default: a
ReportOutcome) through ``EtcdLog.append``, one append in flight at a time as the
coordinators' log writer does, in batches of 1, 4, 16 and 64 entries. For each batch
size it prints the CPU milliseconds per entry spent by the etcd members (all three
summed, less what they spend idle over the same time: Raft heartbeats) and by this
process (the gRPC client side of the appends), and the appends and entries per
second. CPU comes from psutil, not wall time, so other load on the machine changes
the rates, not the CPU figures. Asserts nothing; about 30 s by default.

    .venv/bin/python bench/etcd_append.py [--entries 2000] [--entry-bytes 300]
                                          [--batches 1,4,16,64] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from dtf.cluster.etcd import Etcd
from dtf.cluster.log import EtcdLog
from dtf.cluster.log_writer import BatchLinger, LogWriter
from dtf.cluster.pending import Pending, PendingCommands
from dtf.core import commands as c
from dtf.testing.etcd import EtcdCluster

IDLE_S = 3.0
OFFER_EVERY_S = 0.001
NO_LINGER = BatchLinger(max_linger_s=0.0)
MIN_APPENDS = 100  # a batch size gets at least this many appends, whatever --entries says


@dataclass(frozen=True)
class Figures:
    batch: int
    appends: int
    entries: int
    appends_per_s: float
    entries_per_s: float
    etcd_cpu_ms_per_entry: float
    etcd_cpu_ms_per_append: float
    client_cpu_ms_per_entry: float
    client_cpu_ms_per_append: float


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=2000, help="entries per batch size")
    parser.add_argument("--entry-bytes", type=int, default=300, help="bytes per entry")
    parser.add_argument("--batches", default="1,4,16,64", help="comma-separated batch sizes")
    parser.add_argument("--rates", default="300,600,1000,2000", help="LogWriter commands/s")
    parser.add_argument("--writer-seconds", type=float, default=2.0, help="per LogWriter rate")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    options = parser.parse_args()
    options.batches = [int(part) for part in options.batches.split(",") if part.strip()]
    options.rates = [float(part) for part in options.rates.split(",") if part.strip()]
    if min(options.entries, options.entry_bytes, *options.batches, *options.rates) < 1:
        parser.error("--entries, --entry-bytes, every batch size and rate must be at least 1")
    return options


def etcd_members() -> list[psutil.Process]:
    """The etcd processes this script started."""
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if Path(child.cmdline()[0]).name == "etcd"
    ]


def cpu_s(processes: list[psutil.Process]) -> float:
    return sum(sum(process.cpu_times()[:2]) for process in processes)


def idle_cpu_share(members: list[psutil.Process]) -> float:
    """CPU seconds per second the members spend with nothing to do."""
    before, started = cpu_s(members), time.perf_counter()
    time.sleep(IDLE_S)
    return (cpu_s(members) - before) / (time.perf_counter() - started)


async def append_all(log: EtcdLog, entries: list[bytes], batch: int) -> None:
    tail = await log.tail()
    for first in range(0, len(entries), batch):
        tail = await log.append(
            entries[first : first + batch], expected_tail=tail, fence_epoch=None
        )


async def measure(
    log: EtcdLog, members: list[psutil.Process], idle_share: float, batch: int, entries: list[bytes]
) -> Figures:
    await append_all(log, entries[: batch * 4], batch)  # warm-up: channel, allocations
    me = psutil.Process()
    etcd_before, client_before = cpu_s(members), cpu_s([me])
    started = time.perf_counter()
    await append_all(log, entries, batch)
    elapsed = time.perf_counter() - started
    etcd_s = cpu_s(members) - etcd_before - idle_share * elapsed
    client_s = cpu_s([me]) - client_before
    appends = -(-len(entries) // batch)
    return Figures(
        batch=batch,
        appends=appends,
        entries=len(entries),
        appends_per_s=appends / elapsed,
        entries_per_s=len(entries) / elapsed,
        etcd_cpu_ms_per_entry=1000 * etcd_s / len(entries),
        etcd_cpu_ms_per_append=1000 * etcd_s / appends,
        client_cpu_ms_per_entry=1000 * client_s / len(entries),
        client_cpu_ms_per_append=1000 * client_s / appends,
    )


@dataclass(frozen=True)
class WriterFigures:
    lingers: bool
    offered_per_s: float
    commands: int
    appends: int
    commands_per_append: float
    etcd_cpu_ms_per_command: float
    client_cpu_ms_per_command: float


@dataclass(frozen=True)
class Report:
    entry_bytes: int
    etcd_idle_cpu_ms_per_s: float
    load_average: tuple[float, float, float]
    rows: list[Figures]
    writer_rows: list[WriterFigures]


async def offer(writer: LogWriter, entries: list[bytes], rate_per_s: float) -> None:
    """Queue ``entries`` at ``rate_per_s``, whatever the writer does (an open loop)."""
    loop = asyncio.get_running_loop()
    command, started, sent = c.CancelTask(at=0.0, task_id="bench"), loop.time(), 0
    while sent < len(entries):
        due = min(len(entries), int((loop.time() - started) * rate_per_s) + 1)
        for entry in entries[sent:due]:
            writer.add(Pending(command, entry, loop.create_future()))
        sent = due
        await asyncio.sleep(OFFER_EVERY_S)


async def measure_writer(
    etcd: Etcd, members: list[psutil.Process], idle_share: float, rate_per_s: float, **kw: Any
) -> WriterFigures:
    """Commands offered at ``rate_per_s`` for ``kw["seconds"]`` through ``LogWriter``
    (``kw["linger"]``) into a log of its own; how many rode each append, at what CPU."""
    lingers: bool = kw["linger"] is not NO_LINGER
    log = EtcdLog(etcd, f"writer-{'linger' if lingers else 'plain'}-{rate_per_s:g}")
    writer = LogWriter(
        log, PendingCommands(), fence=lambda: None, applied_seq=lambda: 0, linger=kw["linger"]
    )
    entries = [os.urandom(kw["entry_bytes"]) for _ in range(int(rate_per_s * kw["seconds"]))]
    me = psutil.Process()
    etcd_before, client_before, started = cpu_s(members), cpu_s([me]), time.perf_counter()
    writing = asyncio.create_task(writer.run())
    await offer(writer, entries, rate_per_s)
    writer.close()
    await writing
    elapsed = time.perf_counter() - started
    etcd_ms = 1000 * (cpu_s(members) - etcd_before - idle_share * elapsed)
    client_ms = 1000 * (cpu_s([me]) - client_before)
    appends = len((await etcd.get_prefix(log.keys.log_prefix))[0])
    return WriterFigures(
        lingers=lingers,
        offered_per_s=rate_per_s,
        commands=len(entries),
        appends=appends,
        commands_per_append=len(entries) / appends,
        etcd_cpu_ms_per_command=etcd_ms / len(entries),
        client_cpu_ms_per_command=client_ms / len(entries),
    )


async def run(options: argparse.Namespace, cluster: EtcdCluster) -> Report:
    members = etcd_members()
    idle_share = idle_cpu_share(members)
    etcd = await Etcd.connect(cluster.settings())
    try:
        log = EtcdLog(etcd, "bench")
        rows = []
        for batch in options.batches:
            count = max(options.entries, MIN_APPENDS * batch)
            entries = [os.urandom(options.entry_bytes) for _ in range(count)]
            rows.append(await measure(log, members, idle_share, batch, entries))
        writer_rows = [
            await measure_writer(
                etcd,
                members,
                idle_share,
                rate,
                linger=linger,
                seconds=options.writer_seconds,
                entry_bytes=options.entry_bytes,
            )
            for rate in options.rates
            for linger in (NO_LINGER, BatchLinger())
        ]
    finally:
        await etcd.close()
    return Report(options.entry_bytes, 1000 * idle_share, os.getloadavg(), rows, writer_rows)


def render(report: Report) -> None:
    print(
        f"3 etcd members, {report.entry_bytes}-byte entries, one append in flight; "
        f"etcd idle {report.etcd_idle_cpu_ms_per_s:.1f} ms CPU/s (subtracted)"
    )
    print(
        f"{'batch':>5} {'appends/s':>10} {'entries/s':>10} {'etcd ms/entry':>14} "
        f"{'etcd ms/append':>15} {'client ms/entry':>16} {'client ms/append':>17}"
    )
    for row in report.rows:
        print(
            f"{row.batch:>5} {row.appends_per_s:>10.0f} {row.entries_per_s:>10.0f} "
            f"{row.etcd_cpu_ms_per_entry:>14.3f} {row.etcd_cpu_ms_per_append:>15.3f} "
            f"{row.client_cpu_ms_per_entry:>16.3f} {row.client_cpu_ms_per_append:>17.3f}"
        )
    print(
        f"\nLogWriter, commands offered at a steady rate; {'linger':>6} {'offered/s':>9} "
        f"{'per append':>10} {'etcd ms/command':>15} {'client ms/command':>17}"
    )
    for w in report.writer_rows:
        print(
            f"{'':>46}{'yes' if w.lingers else 'no':>6} {w.offered_per_s:>9.0f} "
            f"{w.commands_per_append:>10.1f} {w.etcd_cpu_ms_per_command:>15.3f} "
            f"{w.client_cpu_ms_per_command:>17.3f}"
        )
    print("load average (1, 5, 15 min):", ", ".join(f"{v:.1f}" for v in report.load_average))


def main() -> None:
    options = parse_options()
    with (
        tempfile.TemporaryDirectory(prefix="dtf-etcd-append-") as work_dir,
        EtcdCluster(Path(work_dir) / "etcd", size=3) as cluster,
    ):
        cluster.wait_healthy(10.0)
        report = asyncio.run(run(options, cluster))
    if options.json:
        json.dump(asdict(report), sys.stdout, indent=2)
        print()
    else:
        render(report)


if __name__ == "__main__":
    main()
