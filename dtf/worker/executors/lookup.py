"""Where a task's program is: its PATH search, remembered for a few seconds.

Given a bare name (``true``, ``python``), ``subprocess`` tries ``execve`` in
every PATH directory until one works, in the forked child, on every spawn. With
the long PATHs of ML machines (conda, pyenv, cargo, CUDA before ``/usr/bin``)
and a few dozen microseconds per failed lookup, that was about 0.2 ms of a
0.6 ms spawn. A worker running many short tasks looks each name up once per
``REMEMBER_S`` and spawns the file it found; a program installed earlier on the
PATH is picked up within that time, and a remembered file that is gone is
looked up again at once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

REMEMBER_S = 5.0
_EFFECTIVE = os.access in os.supports_effective_ids  # exec checks the effective ids


def search_path(name: str, path: str) -> str | None:
    """The first regular, executable file called ``name`` on ``path``, as exec would pick."""
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or os.curdir, name)
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and os.access(candidate, os.X_OK, effective_ids=_EFFECTIVE):
            return candidate
    return None


@dataclass
class ProgramLookup:
    """Remembered PATH searches, keyed by name and PATH, each for ``remember_s``."""

    clock: Callable[[], float]
    remember_s: float = REMEMBER_S
    _found: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)

    def executable(self, argv0: str, env: Mapping[str, str]) -> str | None:
        """The file to spawn for ``argv0``, or None to let exec search (a path,
        not a bare name, or nothing found: exec then reports it)."""
        key = (argv0, env.get("PATH", os.defpath))
        if os.sep in argv0 or not all(os.path.isabs(d) for d in key[1].split(os.pathsep)):
            return None  # a relative PATH entry means the task's cwd: leave it to exec
        now = self.clock()
        remembered = self._found.get(key)
        if remembered is not None and now - remembered[1] < self.remember_s:
            return remembered[0]
        found = search_path(*key)
        if found is None:
            self._found.pop(key, None)
        else:
            self._found[key] = (found, now)
        return found

    def forget(self, argv0: str, env: Mapping[str, str]) -> None:
        """Drop what was remembered for ``argv0``: spawning the file failed."""
        self._found.pop((argv0, env.get("PATH", os.defpath)), None)
