"""Garbage collection tuned for long-running dtf processes.

A coordinator imports a large stack (FastAPI, gRPC, DuckDB, pyarrow) and keeps
every task's record for its lifetime, so its heap holds hundreds of thousands of
objects that never become garbage. CPython's default thresholds run a young
collection every 700 allocations and full collections that walk every tracked
object; under load that cost a cluster node 15-25 % of its CPU, most of it
re-proving that imported modules and recovered records are alive. A worker
agent's heap is smaller, but it allocates for every task it runs: collections
took 4 % of its own CPU running short tasks.

The ``dtf coordinator`` process, once its state is recovered and before it
serves, and the ``dtf worker`` process, before it connects, move everything
alive out of the collector's sight (``gc.freeze``) and run young collections a
hundredfold less often. Reference counting still frees everything not in a
cycle at once; cycles wait longer. Not done for apps or agents built in someone
else's process (tests), whose heap is not ours to freeze.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 70_000
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 10


def settle_after_start() -> None:
    """Collect once, freeze what survives, and space out later collections
    (process-wide: call it only in a process that is a dtf coordinator or worker)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
    log.debug("froze %d objects out of garbage collection", gc.get_freeze_count())
