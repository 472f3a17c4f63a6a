"""Opening a results file that this dtf refuses."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from dtf.results.store import ResultsStore, ResultsStoreError


def test_a_refused_file_is_closed_again(tmp_path: Path) -> None:
    path = tmp_path / "results.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE TABLE schema_version (version INTEGER, created_at DOUBLE)")
        connection.execute("INSERT INTO schema_version VALUES (99, 0)")
    with pytest.raises(ResultsStoreError, match="version 99") as refused:
        ResultsStore.open(path)
    # The traceback still holds open()'s frame; the file must be free all the same.
    assert refused.traceback
    with duckdb.connect(str(path), read_only=True) as connection:
        assert connection.execute("SELECT max(version) FROM schema_version").fetchall() == [(99,)]
