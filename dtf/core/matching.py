"""Does a worker satisfy a requirement set, and if not, which constraint fails?

Each constraint is a small named check, so the same code answers "may this
worker run it" (``satisfies``) and "why does this task wait"
(``explain_waiting``: how many workers meet each constraint).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dtf.core.model import BrowserRequirement, Capabilities, RequirementSet


@dataclass(frozen=True)
class Constraint:
    description: str
    check: Callable[[Capabilities, str], bool]


@dataclass(frozen=True)
class ConstraintCount:
    constraint: str
    satisfied_by: int
    of: int


def _best_cuda_compute(caps: Capabilities) -> float | None:
    values = [g.compute_capability for g in caps.gpus if g.compute_capability is not None]
    return max(values) if values else None


def _browser_ok(caps: Capabilities, wanted: BrowserRequirement) -> bool:
    for browser in caps.browsers:
        if browser.name.lower() != wanted.name.lower():
            continue
        if wanted.min_version is None and wanted.max_version is None:
            return True
        if browser.major is None:
            continue
        low = wanted.min_version if wanted.min_version is not None else browser.major
        high = wanted.max_version if wanted.max_version is not None else browser.major
        if low <= browser.major <= high:
            return True
    return False


def _range_text(name: str, low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:g} <= {name} <= {high:g}"
    return f"{name} >= {low:g}" if low is not None else f"{name} <= {high:g}"


def _within(value: float | None, low: float | None, high: float | None) -> bool:
    if value is None:
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def constraints_of(req: RequirementSet) -> list[Constraint]:
    """The checks a requirement set stands for, each with a readable name."""
    found: list[Constraint] = []
    if req.hardware:
        wanted = frozenset(req.hardware)
        found.append(
            Constraint(
                "/".join(h.value for h in req.hardware),
                lambda caps, _w: not wanted.isdisjoint(caps.hardware),
            )
        )
    if req.min_memory_gb is not None or req.max_memory_gb is not None:
        lo, hi = req.min_memory_gb, req.max_memory_gb
        found.append(
            Constraint(
                _range_text("memory_gb", lo, hi),
                lambda caps, _w: _within(caps.memory_gb, lo, hi),
            )
        )
    if req.min_cpu_count is not None:
        n = req.min_cpu_count
        found.append(Constraint(f"cpu_count >= {n}", lambda caps, _w: caps.cpu_count >= n))
    if req.min_cuda_compute is not None or req.max_cuda_compute is not None:
        lo, hi = req.min_cuda_compute, req.max_cuda_compute
        found.append(
            Constraint(
                _range_text("cuda_compute", lo, hi),
                lambda caps, _w: _within(_best_cuda_compute(caps), lo, hi),
            )
        )
    found.extend(_gpu_and_identity_constraints(req))
    return found


def _gpu_and_identity_constraints(req: RequirementSet) -> list[Constraint]:
    found: list[Constraint] = []
    if req.min_gpu_memory_gb is not None:
        gb = req.min_gpu_memory_gb
        found.append(
            Constraint(
                f"gpu_memory_gb >= {gb:g}",
                lambda caps, _w: any(g.memory_gb >= gb for g in caps.gpus),
            )
        )
    if req.gpu_model is not None:
        model = req.gpu_model.lower()
        found.append(
            Constraint(
                f"gpu_model ~ {req.gpu_model}",
                lambda caps, _w: any(model in g.model.lower() for g in caps.gpus),
            )
        )
    if req.browser is not None:
        browser = req.browser
        found.append(
            Constraint(_browser_text(browser), lambda caps, _w: _browser_ok(caps, browser))
        )
    for key, value in req.labels.items():
        found.append(Constraint(f"label {key}={value}", _label_check(key, value)))
    if req.worker_ids:
        ids = frozenset(req.worker_ids)
        found.append(
            Constraint(f"worker in {sorted(ids)}", lambda _caps, worker_id: worker_id in ids)
        )
    return found


def _label_check(key: str, value: str) -> Callable[[Capabilities, str], bool]:
    return lambda caps, _worker_id: caps.labels.get(key) == value


def _browser_text(browser: BrowserRequirement) -> str:
    if browser.min_version is None and browser.max_version is None:
        return f"browser {browser.name}"
    return _range_text(f"{browser.name} version", browser.min_version, browser.max_version)


def satisfies(req: RequirementSet, caps: Capabilities, worker_id: str) -> bool:
    return all(c.check(caps, worker_id) for c in constraints_of(req))


def count_satisfying(
    req: RequirementSet, workers: Sequence[tuple[str, Capabilities]]
) -> list[ConstraintCount]:
    """Per constraint, how many of ``workers`` meet it."""
    return [
        ConstraintCount(
            c.description, sum(1 for wid, caps in workers if c.check(caps, wid)), len(workers)
        )
        for c in constraints_of(req)
    ]


def explain_waiting(
    req: RequirementSet,
    workers: Sequence[tuple[str, Capabilities]],
    held_back: str = "all slots busy",
) -> str:
    """``"cuda: 0 of 3 workers; memory_gb >= 32: 1 of 3"``, or a reason when nothing
    fails; ``held_back`` says why the matching workers run nothing more of it now."""
    if not workers:
        return "no workers are online"
    counts = count_satisfying(req, workers)
    matching = sum(1 for wid, caps in workers if satisfies(req, caps, wid))
    if not counts:
        return f"no requirements; {len(workers)} workers can run it, {held_back}"
    parts = [
        f"{c.constraint}: {c.satisfied_by} of {c.of}" + (" workers" if i == 0 else "")
        for i, c in enumerate(counts)
    ]
    if matching:
        noun = "worker" if matching == 1 else "workers"
        parts.append(f"{matching} matching {noun}, {held_back}")
    return "; ".join(parts)
