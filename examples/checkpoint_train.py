"""A "training" benchmark that checkpoints every step and resumes after a crash.

Each step takes ``step_s`` seconds and ends with a checkpoint. Kill the task
mid-way (SIGKILL its process, or the worker running it) and the retried
attempt starts from the latest checkpoint instead of step 0; its metrics say
so (``resumed_from_step``, ``steps_run_this_attempt``).

    dtf submit --benchmark examples/checkpoint_train.py:train --param steps=30 --wait
    # the first attempt kills itself (SIGKILL) at step 12; the retry resumes there:
    dtf submit --benchmark examples/checkpoint_train.py:train \\
        --param steps=30 --param crash_at_step=12 --wait
    dtf task show <id>    # "attempt 2 resumed from step 12 (...) of attempt 1"
"""

from __future__ import annotations

import os
import signal
import time

from dtf.worker import checkpoint


def train(steps: int = 30, step_s: float = 0.15, crash_at_step: int = -1) -> dict[str, float]:
    state = checkpoint.load(default={"step": 0, "loss": 1.0})
    first_step, loss = int(state["step"]), float(state["loss"])
    for step in range(first_step, steps):
        if step == crash_at_step and os.environ.get("DTF_ATTEMPT") == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(step_s)
        loss *= 0.9
        checkpoint.save({"step": step + 1, "loss": loss}, step=step + 1)
    return {
        "steps": steps,
        "resumed_from_step": first_step,
        "steps_run_this_attempt": steps - first_step,
        "final_loss": loss,
    }
