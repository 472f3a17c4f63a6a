"""Checkpoint blobs: content-addressed files in the coordinator's data dir.

A blob lives at ``<root>/sha256/<first 2 hex>/<other 62 hex>``. It is written
to a temporary file in the same directory, fsync'd, then renamed into place
(and the directory fsync'd), so a reader sees a whole blob or none, and the
blob is durable before the journal refers to it. Storing the same bytes
twice is one file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path

from dtf.core.checkpoints import is_digest
from dtf.errors import InvalidRequest, NotFound

log = logging.getLogger(__name__)


class CheckpointTooLarge(InvalidRequest):
    status_code = 413


class CheckpointStore:
    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

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
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=".incoming-", dir=target.parent)
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
