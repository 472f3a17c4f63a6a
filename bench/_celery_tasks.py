"""The Celery app the benchmark's worker imports (``celery -A _celery_tasks``).

The broker and result backend are given on the command line (worker) or set
by ``_celery.py`` (client), so this module reads no configuration.
"""

from __future__ import annotations

import subprocess

from celery import Celery

app = Celery("dtf_bench")


@app.task(name="dtf_bench.run_true")
def run_true() -> int:
    return subprocess.run(["true"], check=True).returncode
