"""No child of ``dtf up`` or ``dtf cluster local`` outlives it, even one SIGKILLed.

How this works (``dtf.worker.reaper`` one level up): the supervising process starts
one sidecar (``dtf.proc_markers.run_sidecar``, which imports nothing of dtf but that
module) in a session of its own, holds the only write end of a pipe to the sidecar's
stdin (pipes are close-on-exec) and waits, bounded, until the sidecar writes on its
stdout that it is armed. Every child it starts gets ``DTF_LOCAL_MARKER=<marker>`` in
its environment, and what they start inherits it: etcd members, coordinators,
workers, their reaper sidecars and task processes. When the supervisor exits, however
it exits, the sidecar reads end-of-file and SIGKILLs every process carrying the
marker, with its process group, through pidfds so that a reused pid is spared. After
a clean stop it finds none.

Not PR_SET_PDEATHSIG: that signal comes when the *thread* that started a child ends,
and supervisor threads restart children; it must be set between fork and exec, with
other threads running; and etcd members are started by ``dtf.testing.etcd``.
SIGKILL, not SIGTERM: with the supervisor gone nobody would escalate a stop that
hangs, and every child already survives being killed (journal and etcd are fsync'd
before a write is acknowledged; a worker's reaper kills its tasks). The sidecar
ignores SIGINT, SIGTERM and SIGHUP, so a signal meant for the supervisor's terminal
does not take it out first. Linux only: it reads ``/proc/<pid>/environ``.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from typing import NoReturn

from dtf.errors import DtfError
from dtf.proc_markers import start_sidecar, stop_sidecar, wait_ready

logger = logging.getLogger(__name__)

MARKER_ENV = "DTF_LOCAL_MARKER"
SIDECAR_NAME = "orphan guard"
READY_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 10.0


class OrphanGuardError(DtfError):
    """The sidecar did not start: nothing would kill the children of a SIGKILLed supervisor."""

    status_code = 500


class OrphanGuard:
    """``guard = OrphanGuard()``; start children with ``guard.environment()`` in their
    environment; ``guard.close()`` once they are stopped. Raises ``OrphanGuardError``
    when the sidecar does not report that it is armed."""

    def __init__(self, python: str = sys.executable) -> None:
        """``python`` runs the sidecar: the interpreter the children run with."""
        self.marker = secrets.token_hex(12)
        self.sidecar = start_sidecar(
            python, SIDECAR_NAME, MARKER_ENV, self.marker, spared_group=os.getpgrp()
        )
        if not wait_ready(self.sidecar, READY_TIMEOUT_S):
            self._abandon(python)

    def environment(self) -> dict[str, str]:
        """The variable a child's environment needs for the guard to find it."""
        return {MARKER_ENV: self.marker}

    def close(self) -> None:
        """Let the sidecar kill whatever marked process is left, and wait for it."""
        if not stop_sidecar(self.sidecar, CLOSE_TIMEOUT_S):
            logger.error("orphan guard %d did not exit; killed it", self.sidecar.pid)

    def _abandon(self, python: str) -> NoReturn:
        self.sidecar.kill()
        stop_sidecar(self.sidecar, CLOSE_TIMEOUT_S)
        raise OrphanGuardError(
            f"the orphan guard sidecar (pid {self.sidecar.pid}, exit status "
            f"{self.sidecar.returncode}) did not report ready within {READY_TIMEOUT_S:g} s, "
            "so processes of a killed local cluster could be left running; its error, if "
            f"any, is on stderr above; check that {python} -c 'import dtf.proc_markers' works"
        )
