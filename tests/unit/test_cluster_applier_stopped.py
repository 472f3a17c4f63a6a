"""A coordinator whose log applier died says so: its bus names why, and its
cluster health answers unhealthy instead of reporting no lag."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import cast

import pytest

from dtf.cluster.bus import ClusterBus
from dtf.cluster.election import Election
from dtf.cluster.etcd import Etcd
from dtf.cluster.etcd_view import EtcdClusterView
from dtf.cluster.log import EtcdLog
from dtf.cluster.members import Members
from dtf.core.state import State


def test_a_bus_whose_applier_fails_names_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> str | None:
        # the writer only touches etcd when a command is queued, and none is
        bus = ClusterBus(
            EtcdLog(cast(Etcd, None), "unit"),
            State(),
            snapshot_every=10_000,
            fence=lambda: None,
            revision=0,
        )

        async def broken() -> None:
            raise RuntimeError("a defect in applying")

        monkeypatch.setattr(bus._applier, "run", broken)
        assert bus.applying_stopped is None
        bus.start()
        async with asyncio.timeout(10):
            while bus.applying_stopped is None:
                await asyncio.sleep(0)
        await bus.stop()
        return bus.applying_stopped

    with caplog.at_level(logging.ERROR):
        stopped = asyncio.run(scenario())
    assert stopped == "stopped applying the log after seq 0; restart this coordinator"
    assert "this coordinator stops taking writes" in caplog.text


def test_a_node_that_stopped_applying_is_unhealthy() -> None:
    stopped: list[str] = []
    view = EtcdClusterView(
        "unit",
        cast(Election, SimpleNamespace(leader=object(), is_leader=False)),
        cast(Members, SimpleNamespace(disabled_reason=None)),
        applied_seq=lambda: 7,
        log_seq=lambda: 7,
        applying_stopped=lambda: stopped[0] if stopped else None,
    )
    view._etcd_error = None
    assert view.health() == (True, "follower, 0 entries behind the log tail")
    stopped.append("stopped applying the log after seq 7; restart this coordinator")
    assert view.health() == (False, stopped[0])
