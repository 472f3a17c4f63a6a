"""Appends per second of the embedded SQLite journal, by batch size.

Each append is one fsync'd transaction (WAL, synchronous=FULL), so batches of 1
measure the disk's sync latency and larger batches show what group commit buys.
Prints figures; asserts nothing.

    .venv/bin/python bench/journal.py [--seconds 2] [--entry-bytes 300]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dtf.journal.sqlite import SqliteJournal

BATCH_SIZES = (1, 10, 100)


def measure(data_dir: Path, batch_size: int, entry_bytes: int, seconds: float) -> dict[str, float]:
    batch = [b"x" * entry_bytes] * batch_size
    with SqliteJournal(data_dir) as journal:
        appends = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            journal.append(batch)
            appends += 1
    return {
        "batch_size": batch_size,
        "appends_per_s": appends / elapsed,
        "entries_per_s": appends * batch_size / elapsed,
        "ms_per_append": 1000 * elapsed / appends,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per batch size")
    parser.add_argument("--entry-bytes", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    options = parser.parse_args()
    results = []
    for batch_size in BATCH_SIZES:
        with tempfile.TemporaryDirectory(dir=options.dir) as data_dir:
            results.append(
                measure(Path(data_dir), batch_size, options.entry_bytes, options.seconds)
            )
    if options.json:
        print(json.dumps(results, indent=2))
        return
    table = Table(title=f"SqliteJournal.append, {options.entry_bytes}-byte entries")
    for column in ("batch size", "appends/s", "entries/s", "ms/append"):
        table.add_column(column, justify="right")
    for row in results:
        table.add_row(
            str(row["batch_size"]),
            f"{row['appends_per_s']:,.0f}",
            f"{row['entries_per_s']:,.0f}",
            f"{row['ms_per_append']:.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
