"""The two loops the election and the node registry run against etcd.

``keep_doing`` repeats a step (refresh a lease, report a position) and keeps
going through etcd errors and unexpected ones; ``follow`` reads a key range and then watches it,
reading again after the watch breaks. Both warn of the first failure in a
row and log the retries after it at debug level, so an etcd outage is one
warning per loop, not one per try.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from dtf.cluster.etcd import Etcd, EtcdError, WatchEvent
from dtf.cluster.history import backoff_s

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[float]]
"""One round of work; returns how long to sleep before the next."""


def level(failures: int) -> int:
    """Warn of the first failure in a row; the retries after it are debug noise."""
    return logging.DEBUG if failures else logging.WARNING


async def keep_doing(step: Step, *, what: str, retry_s: Callable[[int], float]) -> None:
    """Run ``step`` until cancelled; after an ``EtcdError``, or any other error
    (logged with its traceback: it is a bug, but the work must go on), run it
    again in ``retry_s(failures in a row)``. ``what`` names the work in the log."""
    failures = 0
    while True:
        try:
            delay_s = await step()
            if failures:
                log.info("%s works again", what)
            failures = 0
        except EtcdError as exc:
            log.log(level(failures), "%s failed: %s", what, exc)
            delay_s = retry_s(failures)
            failures += 1
        except Exception:
            log.exception("%s failed unexpectedly; trying again", what)
            delay_s = retry_s(failures)
            failures += 1
        await asyncio.sleep(delay_s)


async def follow(
    etcd: Etcd,
    prefix: bytes,
    read: Callable[[], Awaitable[int]],
    take: Callable[[list[WatchEvent]], None],
    *,
    what: str,
    errors: tuple[type[Exception], ...] = (EtcdError,),
) -> None:
    """``read`` the keys under ``prefix`` (it returns the etcd revision it read
    at), then pass every watch response after that revision to ``take``; start
    over with backoff when the watch ends or ``errors`` are raised."""
    failures = 0
    while True:
        try:
            revision = await read()
            async for events in etcd.watch_prefix(prefix, revision + 1):
                take(events)
                failures = 0
        except errors as exc:
            log.log(level(failures), "%s lost its watch: %s", what, exc)
        await asyncio.sleep(backoff_s(failures))
        failures += 1
