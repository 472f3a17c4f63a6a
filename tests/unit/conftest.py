"""Typed factory fixtures for the pure core's tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dtf.core.model import Capabilities, TaskSpec
from dtf.core.state import StateConfig
from dtf.testing.factories import StateDriver, capabilities, task_spec

LEASE_TIMEOUT_S = 10.0
WORKER_TIMEOUT_S = 30.0


@pytest.fixture
def make_spec() -> Callable[..., TaskSpec]:
    """``make_spec(priority=1, dependencies=["a"])``: a validated command task spec."""
    return task_spec


@pytest.fixture
def make_caps() -> Callable[..., Capabilities]:
    """``make_caps(hardware=["cuda"], memory_gb=64)``: validated worker capabilities."""
    return capabilities


@pytest.fixture
def driver() -> StateDriver:
    """A fresh state with a 10 s lease and a 30 s worker timeout, clock at 0."""
    return StateDriver(
        StateConfig(lease_timeout_s=LEASE_TIMEOUT_S, worker_timeout_s=WORKER_TIMEOUT_S)
    )
