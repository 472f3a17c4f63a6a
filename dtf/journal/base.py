"""The journal interface: a durable, ordered log of encoded commands plus snapshots.

The embedded implementation is SQLite (``sqlite.py``); a replicated one kept in
etcd implements the same protocol. Entries are opaque bytes (see
``dtf.core.commands.encode``); sequence numbers start at 1 and have no gaps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol


class Journal(Protocol):
    def append(self, entries: Sequence[bytes]) -> int:
        """Durably append ``entries`` in order (one transaction) and return the
        sequence number of the last one. Returns only once they are on disk."""
        ...

    def read(self, after_seq: int = 0) -> Iterator[tuple[int, bytes]]:
        """Yield ``(seq, entry)`` for every entry with ``seq > after_seq``, in order."""
        ...

    def last_seq(self) -> int:
        """The sequence number of the newest entry, 0 when empty."""
        ...

    def save_snapshot(self, seq: int, data: bytes) -> None:
        """Store a snapshot of the state after applying entries up to ``seq``."""
        ...

    def load_snapshot(self) -> tuple[int, bytes] | None:
        """The newest snapshot as ``(seq, data)``, or None."""
        ...

    def compact(self, through_seq: int) -> None:
        """Drop entries up to ``through_seq``, which a saved snapshot covers."""
        ...

    def close(self) -> None: ...
