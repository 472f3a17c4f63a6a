"""Queries over the results file for the coordinator's routes and live channel.

Each query runs on a cursor of its own after the ingester has written what is
pending (``ResultsIngester.fresh_reader``), so it includes every attempt
finished before it began. That can mean waiting for a write under way, so
queries run in a small thread pool of their own: however many wait, they never
hold the default pool's threads, which the journal writes go through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import duckdb

from dtf.results.ingest import ResultsIngester

READ_THREADS = 2
Answer = TypeVar("Answer")


class ResultsReads:
    """``await reads.run(lambda cursor: ...)``; ``close()`` once nothing reads any more."""

    def __init__(self, ingester: ResultsIngester, *, threads: int = READ_THREADS) -> None:
        self.ingester = ingester
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="dtf-results-read")

    async def run(self, query: Callable[[duckdb.DuckDBPyConnection], Answer]) -> Answer:
        """``query``'s answer on a fresh cursor, computed in the results' own threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._fresh, query)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _fresh(self, query: Callable[[duckdb.DuckDBPyConnection], Answer]) -> Answer:
        with self.ingester.fresh_reader() as cursor:
            return query(cursor)
