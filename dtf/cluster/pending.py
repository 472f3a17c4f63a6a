"""Commands this coordinator appended and whose callers wait for them to be applied.

Each appended command is registered under the seq its batch gave it. When the
applier reaches that seq with the very same entry bytes, the entry is ours:
the caller's future gets the state machine's result, and the command object
we still hold is applied instead of decoding the entry again. The same seq
with other bytes means another coordinator's append won that position; the
writer has already learned so (``TailMoved``) and registered the command again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from dtf.core import commands as c
from dtf.core.events import Event
from dtf.errors import DtfError

MAYBE_APPLIED = "it may have been applied: retry it (commands are idempotent)"


@dataclass
class Pending:
    command: c.Command
    entry: bytes
    future: asyncio.Future[list[Event]] = field(repr=False)
    seq: int = 0


class PendingCommands:
    """Appended commands by seq, until applied here or failed."""

    def __init__(self) -> None:
        self._by_seq: dict[int, Pending] = {}

    def __bool__(self) -> bool:
        return bool(self._by_seq)

    def __len__(self) -> int:
        return len(self._by_seq)

    @property
    def highest_seq(self) -> int:
        return max(self._by_seq, default=0)

    def register(self, run: Iterable[Pending], first_seq: int) -> None:
        for seq, pending in enumerate(run, start=first_seq):
            pending.seq = seq
            self._by_seq[seq] = pending

    def unregister(self, run: Iterable[Pending]) -> None:
        for pending in run:
            if self._by_seq.get(pending.seq) is pending:
                del self._by_seq[pending.seq]

    def take(self, seq: int, entry: bytes) -> Pending | None:
        """The command appended as ``entry`` at ``seq``, now unregistered; None
        when that entry is not ours."""
        pending = self._by_seq.get(seq)
        if pending is None or pending.entry != entry:
            return None
        del self._by_seq[seq]
        return pending

    def fail(self, run: Iterable[Pending], error: DtfError) -> None:
        run = list(run)
        self.unregister(run)
        for pending in run:
            if not pending.future.done():
                pending.future.set_exception(error)

    def fail_through(self, seq: int, error: DtfError) -> None:
        """Fail the commands registered at ``seq`` or before."""
        self.fail([p for s, p in self._by_seq.items() if s <= seq], error)

    def fail_all(self, error: DtfError) -> None:
        self.fail(list(self._by_seq.values()), error)


def resolve(pending: Pending, result: list[Event] | DtfError) -> None:
    if pending.future.done():
        return
    if isinstance(result, DtfError):
        pending.future.set_exception(result)
    else:
        pending.future.set_result(result)
