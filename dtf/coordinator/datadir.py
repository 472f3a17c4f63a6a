"""One coordinator per data dir: a second one on the same journal would diverge."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from dtf.errors import Conflict

LOCK_FILE = "coordinator.lock"


class DataDirLock:
    """An exclusive ``flock`` on ``<data dir>/coordinator.lock``, held until
    ``release`` or process exit (the kernel drops it even on SIGKILL)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            self.release()
            raise Conflict(
                f"another coordinator (pid {holder}) is using {data_dir}; stop it or "
                "choose another --data-dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
