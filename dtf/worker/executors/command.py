"""``command`` tasks: a shell string or an argv list."""

from __future__ import annotations

import msgspec

from dtf.core.model import CommandConfig, Outcome
from dtf.worker.executors.attempt import Attempt
from dtf.worker.executors.outcomes import join_errors, process_outcome, read_result_file


async def run_command(attempt: Attempt, config: CommandConfig) -> Outcome:
    if isinstance(config.command, str):
        argv = ["/bin/sh", "-c", config.command]
    else:
        argv = list(config.command)
    result = await attempt.run(argv, env=attempt.env(config.env), cwd=config.cwd)
    outcome = process_outcome(result, attempt.timeout_s)
    metrics, note = read_result_file(attempt.result_file)
    return msgspec.structs.replace(outcome, metrics=metrics, error=join_errors(outcome.error, note))
