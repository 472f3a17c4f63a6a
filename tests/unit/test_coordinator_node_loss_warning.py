"""The warning a cluster coordinator gives when its task leases could expire
before the loss of a node cut off from etcd is journaled."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dtf.coordinator.server import _warn_if_leases_outrun_node_loss
from dtf.coordinator.settings import CoordinatorSettings

# (lease timeout (heartbeats every fifth of it, at most 2 s), registry TTL, warned)
CASES = [
    # the defaults: 10 s leases, a 3 s registry TTL
    (10.0, 3, False),
    # 4.4 s of lease after the last heartbeat outlasts TTL + 1 s, but not an etcd
    # leader change on top, which renews every lease (the record's too)
    (5.5, 3, True),
    (6.5, 3, False),
    (4.0, 3, True),
    (9.0, 6, True),  # a 2 s leader lease TTL
]


@pytest.mark.parametrize(("lease_timeout_s", "ttl_s", "warned"), CASES)
def test_leases_must_outlast_the_registry_ttl_and_an_etcd_leader_change(
    caplog: pytest.LogCaptureFixture, lease_timeout_s: float, ttl_s: int, warned: bool
) -> None:
    settings = CoordinatorSettings(Path("unused"), lease_timeout_s=lease_timeout_s)
    node: Any = SimpleNamespace(registry_ttl_s=ttl_s)
    with caplog.at_level(logging.WARNING, logger="dtf.coordinator.server"):
        _warn_if_leases_outrun_node_loss(settings, node)
    messages = [r.getMessage() for r in caplog.records]
    assert bool(messages) == warned
    assert all("etcd leader change" in message for message in messages)
