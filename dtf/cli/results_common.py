"""What the ``dtf results`` commands share: ``--db``, ``--since`` and reading a results file.

DuckDB lets only one process open a file for writing, so ``--db`` on the file
of a running coordinator fails: use the API then, or a copy of the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.text import Text

DURATION_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DB_HELP = (
    "Read this results file directly instead of asking the coordinator "
    "(not the file of a running coordinator: DuckDB allows one writer process)."
)
db_option = click.option(
    "--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help=DB_HELP
)


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
