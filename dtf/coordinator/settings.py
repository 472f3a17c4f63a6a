"""Coordinator settings: one frozen object built at the edge (CLI flags, env)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dtf.core.breakers import DEFAULT_RESET_TIME_S, DEFAULT_THRESHOLD
from dtf.core.failures import DEFAULT_RULES, ClassificationRule
from dtf.core.health import DEFAULT_HALF_LIFE_S
from dtf.core.health import DEFAULT_THRESHOLD as DEFAULT_HEALTH_THRESHOLD
from dtf.core.recovery_policy import RecoveryPolicy

if TYPE_CHECKING:
    from dtf.cluster.settings import ClusterSettings


@dataclass(frozen=True)
class CoordinatorSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    admin_key: str | None = None
    lease_timeout_s: float = 10.0
    worker_timeout_s: float = 30.0
    snapshot_every: int = 10_000
    max_body_bytes: int = 32 * 1024 * 1024
    log_level: str = "info"
    circuit_breaker_threshold: int = DEFAULT_THRESHOLD
    circuit_breaker_reset_s: float = DEFAULT_RESET_TIME_S
    poison_after_worker_crashes: int = 2
    retry_budget_share: float = 0.5
    retry_budget_min_tasks: int = 10
    health_threshold: float = DEFAULT_HEALTH_THRESHOLD
    health_half_life_s: float = DEFAULT_HALF_LIFE_S
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    classification_rules: tuple[ClassificationRule, ...] = DEFAULT_RULES
    results_db_path: Path | None = None  # None: results.duckdb in the data dir
    results_flush_interval_s: float = 2.0
    checkpoint_sweep_interval_s: float = 600.0
    checkpoint_grace_s: float = 600.0
    cluster: ClusterSettings | None = None  # None: standalone, journal in the data dir

    @property
    def results_db(self) -> Path:
        """The DuckDB file every finished attempt's results are written to."""
        return self.results_db_path or self.data_dir / "results.duckdb"

    @property
    def heartbeat_interval_s(self) -> float:
        """Workers heartbeat several times per lease period, so one lost
        heartbeat never costs a lease."""
        return min(2.0, self.lease_timeout_s / 5)
