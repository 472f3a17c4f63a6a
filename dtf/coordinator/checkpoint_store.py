"""Checkpoint blobs: content-addressed files in the coordinator's data dir.

A blob lives at ``<root>/sha256/<first 2 hex>/<other 62 hex>``. It is written
to a temporary file in the same directory, fsync'd, then renamed into place
(and the directory fsync'd), so a reader sees a whole blob or none, and the
blob is durable before the journal refers to it. Storing the same bytes
twice is one file, whose modification time the second store renews.

``sweep`` deletes the blobs no task resumes from any more (see
``checkpoint_sweeper.py``); a blob younger than its grace period is kept,
since its save may not be journaled yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from dtf.core.checkpoints import is_digest
from dtf.errors import InvalidRequest, NotFound

log = logging.getLogger(__name__)


class CheckpointTooLarge(InvalidRequest):
    status_code = 413


INCOMING_PREFIX = ".incoming-"


@dataclass(frozen=True)
class Swept:
    removed: int
    freed_bytes: int
    kept: int


class CheckpointStore:
    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        # held while a store renews a blob and while a sweep checks and deletes one
        self._lock = threading.Lock()

    def path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise InvalidRequest(
                f"{digest!r} is not a checkpoint digest (64 lowercase hex characters)",
                field="digest",
            )
        return self.root / "sha256" / digest[:2] / digest[2:]

    def check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise CheckpointTooLarge(
                f"checkpoint of {size} bytes exceeds the coordinator's limit of "
                f"{self.max_bytes} bytes; save less state per checkpoint (e.g. only "
                "what resuming needs) or compress it"
            )

    def put(self, data: bytes) -> str:
        """Store ``data`` durably; its SHA-256 digest."""
        self.check_size(len(data))
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        with self._lock, contextlib.suppress(FileNotFoundError):
            os.utime(target)  # a sweep must not take it before this save is journaled
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=INCOMING_PREFIX, dir=target.parent)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        _fsync_directory(target.parent)
        log.debug("stored checkpoint %s (%d bytes)", digest, len(data))
        return digest

    def sweep(self, keep: Collection[str], cutoff: float) -> Swept:
        """Delete every blob not in ``keep`` last stored before ``cutoff`` (a
        ``time.time()``), and temporary files a crash left that old."""
        removed = freed = kept = 0
        for entry in self._entries():
            if entry.parent.name + entry.name in keep:
                kept += 1
                continue
            try:
                size = self._delete_if_older(entry, cutoff)
            except OSError as exc:
                log.warning("checkpoint sweep: cannot delete %s (left alone): %s", entry, exc)
                kept += 1
                continue
            if size is None:
                kept += 1
            else:
                removed += 1
                freed += size
        return Swept(removed, freed, kept)

    def _delete_if_older(self, entry: Path, cutoff: float) -> int | None:
        """Delete ``entry`` if last stored before ``cutoff``: its size, else None."""
        with self._lock:
            try:
                status = entry.stat()
                if status.st_mtime >= cutoff:
                    return None
                entry.unlink()
            except FileNotFoundError:
                return None
        return status.st_size

    def _entries(self) -> list[Path]:
        shards = self.root / "sha256"
        if not shards.is_dir():
            return []
        return [entry for shard in shards.iterdir() if shard.is_dir() for entry in shard.iterdir()]

    def get(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"checkpoint {digest} is not stored on this coordinator") from None


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
