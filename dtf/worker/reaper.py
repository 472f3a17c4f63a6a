"""No task process outlives its worker agent, even one killed with SIGKILL.

The agent starts one sidecar (``dtf.proc_markers.run_sidecar``) in a session of
its own, holding the write end of a pipe to the sidecar's stdin, and waits
(bounded) until the sidecar reports that it is armed; only then does it put
``DTF_AGENT_MARKER=<random>`` into the environment its task processes inherit.
Only the agent holds that end (pipes are close-on-exec), so the sidecar reads
end-of-file exactly when the agent exits, however it exits. It then finds every
process whose environment carries the marker (task processes and everything
they started, whatever process group or session they moved to) and SIGKILLs
each with its group, through pidfds so that a reused pid is spared.

Nothing is sent per task, so the guarantee costs a short task nothing. The
sidecar ignores SIGINT, SIGTERM and SIGHUP so that a signal meant for the
agent's terminal or service does not take it out first. A task that both
clears its environment and leaves its process group escapes; only cgroups
would catch that. An agent whose sidecar does not report ready refuses to
start (``ReaperError``): the tasks it ran would outlive it.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from typing import NoReturn

from dtf.errors import DtfError
from dtf.proc_markers import NO_GROUP, start_sidecar, stop_sidecar, wait_ready

logger = logging.getLogger(__name__)

MARKER_ENV = "DTF_AGENT_MARKER"
SIDECAR_NAME = "dtf worker reaper"
READY_TIMEOUT_S = 30.0
# A replacement is awaited with the agent's event loop blocked (its heartbeats run on
# a thread of their own), so not for long.
RESTART_READY_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 10.0


class ReaperError(DtfError):
    """The sidecar did not start: a dead agent's task processes would keep running."""

    status_code = 500


class Reaper:
    """The agent's handle on the sidecar.

    Creating it marks this process's environment once the sidecar is armed, so it
    must exist before the first task environment is built (the agent creates it
    first thing). Raises ``ReaperError`` when the sidecar does not report ready.
    """

    def __init__(self, python: str = sys.executable) -> None:
        """``python`` runs the sidecar; it must be able to import ``dtf.proc_markers``."""
        self.python = python
        self.marker = secrets.token_hex(12)
        self.sidecar = self._start_sidecar()
        if not wait_ready(self.sidecar, READY_TIMEOUT_S):
            self._refuse()
        os.environ[MARKER_ENV] = self.marker

    def ensure_running(self) -> None:
        """Replace a sidecar that died, so the guarantee holds again."""
        if self.sidecar.poll() is None:
            return
        logger.error(
            "reaper sidecar %d died (exit status %s); starting a new one",
            self.sidecar.pid,
            self.sidecar.returncode,
        )
        stop_sidecar(self.sidecar, STOP_TIMEOUT_S)
        self.sidecar = self._start_sidecar()
        if not wait_ready(self.sidecar, RESTART_READY_TIMEOUT_S):
            logger.error(
                "the new reaper sidecar %d did not report ready within %g s: should this "
                "agent die now, its task processes may keep running; check that %s -c "
                "'import dtf.proc_markers' works",
                self.sidecar.pid,
                RESTART_READY_TIMEOUT_S,
                self.python,
            )

    def close(self) -> None:
        """Let the sidecar kill what is still running and exit."""
        if not stop_sidecar(self.sidecar, STOP_TIMEOUT_S):
            logger.error("reaper sidecar %d did not exit; killed it", self.sidecar.pid)

    def _start_sidecar(self) -> subprocess.Popen[bytes]:
        return start_sidecar(
            self.python, SIDECAR_NAME, MARKER_ENV, self.marker, spared_group=NO_GROUP
        )

    def _refuse(self) -> NoReturn:
        self.sidecar.kill()
        stop_sidecar(self.sidecar, STOP_TIMEOUT_S)
        raise ReaperError(
            f"the worker's reaper sidecar (pid {self.sidecar.pid}, exit status "
            f"{self.sidecar.returncode}) did not report ready within {READY_TIMEOUT_S:g} s, "
            "so task processes could outlive this worker; not starting. Its error, if any, "
            f"is on stderr above; check that {self.python} -c 'import dtf.proc_markers' works"
        )
