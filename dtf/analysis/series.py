"""What the detectors analyse: one metric series, its direction and its environment.

A series is the values of one metric for one (model, hardware, config) in the
order they were recorded, with the commit or run label of each point (to name
the range a change happened in) and the environment each point was measured in.
The store builds them; this module only checks that they are well formed.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from msgspec import Struct

from dtf.analysis.units import Direction, metric_direction
from dtf.errors import DtfError, InvalidRequest

FloatArray = npt.NDArray[np.float64]


class EnvironmentMismatch(DtfError):
    """Two sets of measurements come from different environments and are not compared."""

    status_code = 409


class Environment(Struct, frozen=True):
    """Where a point was measured: hardware class, device, CPU, precision, batch size, params."""

    fields: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, fields: Mapping[str, object]) -> Environment:
        return cls(tuple(sorted((name, "" if v is None else str(v)) for name, v in fields.items())))

    @property
    def fingerprint(self) -> str:
        encoded = json.dumps(self.fields, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]

    def differences(self, other: Environment) -> list[str]:
        """Each field that differs, as 'name: mine != theirs'."""
        mine, theirs = dict(self.fields), dict(other.fields)
        return [
            f"{name}: {mine.get(name, '(unset)')!r} != {theirs.get(name, '(unset)')!r}"
            for name in sorted(mine.keys() | theirs.keys())
            if mine.get(name) != theirs.get(name)
        ]


NO_ENVIRONMENT = Environment()


def require_same_environment(before: Environment, after: Environment) -> None:
    """Raise ``EnvironmentMismatch`` naming what differs, unless the two are equal."""
    if before != after:
        raise EnvironmentMismatch(
            "refusing to compare measurements from different environments ("
            + "; ".join(before.differences(after))
            + "); compare series measured on the same hardware and configuration"
        )


@dataclass(frozen=True, eq=False)
class Series:
    """One metric's values in recording order, one order key and one environment per point.

    ``labels`` identify the series (model, hardware_class, batch_size, ...) and are
    copied onto every alert. ``order_keys`` are the commit or run label of each point.
    """

    metric: str
    values: FloatArray
    order_keys: tuple[str, ...]
    environments: tuple[Environment, ...]
    labels: tuple[tuple[str, str], ...] = ()
    direction: Direction = Direction.TWO_SIDED
    unit: str = ""

    def __post_init__(self) -> None:
        size = len(self.values)
        if self.values.ndim != 1 or not np.all(np.isfinite(self.values)):
            raise InvalidRequest(
                f"series {self.metric!r}: values must be a flat array of finite numbers",
                field="values",
            )
        if len(self.order_keys) != size or len(self.environments) != size:
            raise InvalidRequest(
                f"series {self.metric!r}: {size} values but {len(self.order_keys)} order keys "
                f"and {len(self.environments)} environments; give one of each per value",
                field="order_keys",
            )

    @classmethod
    def of(
        cls,
        metric: str,
        values: Sequence[float] | FloatArray,
        *,
        order_keys: Sequence[str] | None = None,
        environment: Environment | Sequence[Environment] = NO_ENVIRONMENT,
        labels: Mapping[str, object] | None = None,
        direction: Direction | None = None,
        unit: str = "",
    ) -> Series:
        """Build a series; order keys default to the point's index, direction to the name's."""
        array = np.asarray(values, dtype=np.float64)
        keys = tuple(order_keys) if order_keys is not None else tuple(map(str, range(len(array))))
        environments = (
            (environment,) * len(array)
            if isinstance(environment, Environment)
            else tuple(environment)
        )
        return cls(
            metric=metric,
            values=array,
            order_keys=keys,
            environments=environments,
            labels=tuple(sorted((k, str(v)) for k, v in (labels or {}).items())),
            direction=direction if direction is not None else metric_direction(metric),
            unit=unit,
        )

    def __len__(self) -> int:
        return len(self.values)

    def environment_runs(self) -> list[tuple[int, int]]:
        """Half-open [start, end) stretches of consecutive points measured in one environment."""
        starts = [0] + [
            index
            for index in range(1, len(self.environments))
            if self.environments[index] != self.environments[index - 1]
        ]
        return list(zip(starts, [*starts[1:], len(self.environments)], strict=True))


class Kind(enum.StrEnum):
    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    CHANGE = "change"  # a two-sided metric moved; no way to tell better from worse


def kind_of(direction: Direction, shift: float) -> Kind:
    """Whether a shift of the values is a regression or an improvement for this direction."""
    if direction is Direction.TWO_SIDED:
        return Kind.CHANGE
    worse = shift > 0 if direction is Direction.LOWER_IS_BETTER else shift < 0
    return Kind.REGRESSION if worse else Kind.IMPROVEMENT
