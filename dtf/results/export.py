"""Export a results table to Parquet, CSV or JSON with DuckDB's ``COPY``."""

from __future__ import annotations

from pathlib import Path

import duckdb

from dtf.errors import InvalidRequest
from dtf.results.schema import EXPORTABLE

# JSON is one array of objects, so ``json.load`` reads it as well as DuckDB does.
FORMAT_OPTIONS = {
    "parquet": "FORMAT parquet",
    "csv": "FORMAT csv, HEADER true",
    "json": "FORMAT json, ARRAY true",
}


def check_export(table: str, file_format: str) -> None:
    if table not in EXPORTABLE:
        raise InvalidRequest(
            f"cannot export {table!r}; choose one of {', '.join(EXPORTABLE)}", field="table"
        )
    if file_format not in FORMAT_OPTIONS:
        raise InvalidRequest(
            f"unknown export format {file_format!r}; choose one of {', '.join(FORMAT_OPTIONS)}",
            field="format",
        )


def export_table(
    connection: duckdb.DuckDBPyConnection, table: str, file_format: str, path: Path
) -> int:
    """Write ``table`` to ``path``; returns the number of rows written."""
    check_export(table, file_format)
    target = str(path).replace("'", "''")
    result = connection.execute(
        f"COPY (SELECT * FROM {table}) TO '{target}' ({FORMAT_OPTIONS[file_format]})"
    ).fetchall()
    return int(result[0][0]) if result else 0
