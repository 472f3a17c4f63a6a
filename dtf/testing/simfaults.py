"""What a simulated attempt does: how long it runs and what its worker reports.

How this works: each simulated task carries a ``Behaviour`` in its spec (a
command ``["sim-case", behaviour, n]`` or a benchmark entry point
``sim_cases:<behaviour>``), and ``FaultModel.run`` plays one attempt of it on
one worker. Failures come out as the real worker would report them — the
failure kind, exit code, signal, error line and stderr tail that
``dtf.worker.executors.outcomes`` produces — so the real classifier reads
them: a traceback naming ``torch.OutOfMemoryError``, ``Xid 79`` in the
stderr, a renderer killed by SIGSEGV on a WebGPU worker.

Faults bound to the fleet rather than the task: a bad machine fails every
attempt with a hardware error; during the outage window a shared service
refuses connections, failing every attempt running then at once (a burst); a poison task takes its worker down (``crashes_worker``);
a little background noise (segfaults, assertion failures, the OOM killer)
hits any attempt.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Any

from dtf.core.model import Capabilities, FailureKind, HardwareClass, Outcome, TaskSpec, TaskType


class Behaviour(enum.StrEnum):
    PLAIN = "plain"
    """Succeeds, but for the background noise."""
    SOFTWARE_BUG = "software_bug"
    """Fails with a traceback on every run."""
    FLAKY = "flaky"
    """Fails with a traceback on half of its runs."""
    OOM = "oom"
    """A benchmark that runs out of memory above ``params.fits_up_to``."""
    CUDA_FLAKY = "cuda_flaky"
    """CUDA errors on a GPU, now and then."""
    BROWSER_CRASH = "browser_crash"
    """Its browser crashes now and then on a WebGPU worker."""
    CONTEXT_LOST = "context_lost"
    """Loses its WebGPU device now and then."""
    HANG = "hang"
    """Hangs until its timeout on half of its runs."""
    POISON = "poison"
    """Takes down any worker that runs it."""


SIM_COMMAND = "sim-case"
SIM_MODULE = "sim_cases"
FLAKY_RATE = 0.5
OOM_SAMPLE_GB = 0.5


def behaviour_of(spec: TaskSpec) -> Behaviour:
    if spec.type is TaskType.BENCHMARK:
        return Behaviour(str(spec.config["entry_point"]).split(":", 1)[1])
    command = spec.config.get("command")
    if isinstance(command, list) and command[:1] == [SIM_COMMAND]:
        return Behaviour(command[1])
    return Behaviour.PLAIN


def device_of(spec: TaskSpec, capabilities: Capabilities) -> HardwareClass:
    """What the attempt runs on: the first class the task names that the worker has."""
    stages = [spec.requirements.stage(i) for i in range(spec.requirements.stage_count)]
    for stage in stages:
        for hardware in stage.hardware:
            if hardware in capabilities.hardware:
                return hardware
    return HardwareClass.CPU


@dataclass(frozen=True)
class Run:
    """One attempt as it plays out: after ``duration_s`` it reports ``outcome``,
    or, with ``crashes_worker``, takes the worker down instead."""

    duration_s: float
    outcome: Outcome
    crashes_worker: bool = False


@dataclass(frozen=True)
class FaultModel:
    noise_rate: float
    long_run_rate: float
    bad_workers: frozenset[str] = frozenset()
    outage_start_s: float = 0.0
    outage_end_s: float = 0.0

    def overlaps_outage(self, now: float, duration_s: float) -> bool:
        """An attempt running at any time of the outage fails when it reaches
        for the shared service: at once, or when the outage begins."""
        return now < self.outage_end_s and now + duration_s > self.outage_start_s

    def run(
        self,
        spec: TaskSpec,
        worker_id: str,
        capabilities: Capabilities,
        now: float,
        rng: random.Random,
    ) -> Run:
        long = rng.random() < self.long_run_rate
        duration_s = round(rng.uniform(20.0, 60.0) if long else rng.uniform(0.5, 12.0), 3)
        behaviour = behaviour_of(spec)
        if worker_id in self.bad_workers:
            return Run(rng.uniform(0.5, 3.0), hardware_fault(rng))
        if behaviour is Behaviour.POISON:
            return Run(rng.uniform(0.5, 4.0), Outcome(), crashes_worker=True)
        if self.overlaps_outage(now, duration_s):
            fails_at = max(now, self.outage_start_s) + rng.uniform(0.2, 2.0)
            return Run(fails_at - now, connection_refused(rng))
        device = device_of(spec, capabilities)
        failed = behaviour_failure(behaviour, spec, device, rng)
        if failed is None and rng.random() < self.noise_rate:
            failed = rng.choice(NOISE)
        if failed is None:
            return Run(duration_s, Outcome(duration_s=duration_s, metrics={"device": device.value}))
        if failed.failure is FailureKind.TIMEOUT:
            return Run(spec.timeout_seconds, failed)
        return Run(min(duration_s, rng.uniform(0.5, 8.0)), failed)


def behaviour_failure(
    behaviour: Behaviour, spec: TaskSpec, device: HardwareClass, rng: random.Random
) -> Outcome | None:
    """How this attempt fails by the task's own nature, or None."""
    flaky = rng.random() < FLAKY_RATE
    if behaviour is Behaviour.SOFTWARE_BUG or (behaviour is Behaviour.FLAKY and flaky):
        return traceback_exit("AssertionError: expected 0.5, got 0.4999")
    if behaviour is Behaviour.OOM:
        return out_of_memory(spec.config.get("params", {}), device)
    if behaviour is Behaviour.CUDA_FLAKY and device is HardwareClass.CUDA and flaky:
        return rng.choice(CUDA_ERRORS)
    if behaviour is Behaviour.BROWSER_CRASH and device is HardwareClass.WEBGPU and flaky:
        return rng.choice(BROWSER_CRASHES)
    if behaviour is Behaviour.CONTEXT_LOST and device is HardwareClass.WEBGPU and flaky:
        return rng.choice(CONTEXT_LOSSES)
    if behaviour is Behaviour.HANG and flaky:
        timeout_s = spec.timeout_seconds
        return Outcome(
            failure=FailureKind.TIMEOUT,
            error=f"did not finish within its timeout of {timeout_s:g}s; killed",
            signal=15,
            duration_s=timeout_s,
        )
    return None


def out_of_memory(params: dict[str, Any], device: HardwareClass) -> Outcome | None:
    """Out of memory when the batch is above what fits, as a benchmark reports it."""
    batch_size, fits_up_to = int(params["batch_size"]), int(params["fits_up_to"])
    if batch_size <= fits_up_to:
        return None
    wanted_gb = batch_size * OOM_SAMPLE_GB
    if device is HardwareClass.CUDA:
        line = (
            f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {wanted_gb:.2f} GiB "
            f"(GPU 0; batch_size={batch_size})"
        )
    else:
        line = f"MemoryError: Unable to allocate {wanted_gb:.2f} GiB for batch_size={batch_size}"
    return Outcome(
        failure=FailureKind.OOM,
        error="ran out of memory (exit code 1)",
        exit_code=1,
        stderr_tail=f"{TRACEBACK}{line}\n",
    )


TRACEBACK = 'Traceback (most recent call last):\n  File "case.py", line 12, in run\n'


def traceback_exit(last_line: str) -> Outcome:
    return Outcome(
        failure=FailureKind.EXIT_NONZERO,
        error="exited with code 1",
        exit_code=1,
        stderr_tail=f"{TRACEBACK}{last_line}\n",
    )


def crashed(signal: int, name: str, stderr: str) -> Outcome:
    return Outcome(
        failure=FailureKind.CRASHED,
        error=f"killed by signal {name}",
        signal=signal,
        stderr_tail=stderr,
    )


def hardware_fault(rng: random.Random) -> Outcome:
    return rng.choice(
        [
            crashed(7, "SIGBUS", "NVRM: Xid 79, pid=4242, GPU has fallen off the bus.\n"),
            crashed(6, "SIGABRT", "kernel: mce: [Hardware Error]: Machine check events logged\n"),
            traceback_exit("RuntimeError: uncorrectable ECC error encountered"),
        ]
    )


def connection_refused(rng: random.Random) -> Outcome:
    """A shared service is down: the task's call fails, or the worker cannot
    fetch what the task needs before starting it."""
    if rng.random() < 0.5:
        return traceback_exit("ConnectionRefusedError: [Errno 111] Connection refused")
    return Outcome(
        failure=FailureKind.EXECUTOR_ERROR,
        error="could not fetch the task's inputs: [Errno 111] Connection refused",
    )


NOISE = [
    traceback_exit("AssertionError: assertion failed"),
    crashed(11, "SIGSEGV", "Fatal Python error: Segmentation fault\n"),
    Outcome(
        failure=FailureKind.OOM,
        error="killed by SIGKILL, most likely by the kernel OOM killer",
        signal=9,
        stderr_tail="Killed\n",
    ),
]
CUDA_ERRORS = [
    traceback_exit("RuntimeError: CUDA error: an illegal memory access was encountered"),
    crashed(
        6,
        "SIGABRT",
        "RuntimeError: CUDA error: device-side assert triggered\nAborted (core dumped)\n",
    ),
]
BROWSER_CRASHES = [
    crashed(11, "SIGSEGV", "[renderer] Received signal 11 SEGV_MAPERR\n"),
    traceback_exit(
        "playwright._impl._errors.TargetClosedError: Target page, context or browser "
        "has been closed"
    ),
]
CONTEXT_LOSSES = [
    traceback_exit("Error: GPUDevice was lost: reason 'unknown' (GPU process exited)"),
    Outcome(
        failure=FailureKind.CRASHED,
        error="killed by signal SIGTRAP",
        signal=5,
        stderr_tail="WebGPU context lost: the GPU process crashed\n",
    ),
]
