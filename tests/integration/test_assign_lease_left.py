"""An assignment tells the worker what its lease has left, not the full timeout: a
node that sends it late (catching up on the log after a partition) must not give
the worker more time than the coordinators wait before running the task elsewhere."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from dtf.coordinator import worker_api
from dtf.coordinator.server import create_app
from dtf.coordinator.settings import CoordinatorSettings

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer admin-secret"}
LEASE_TIMEOUT_S = 10.0


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    settings = CoordinatorSettings(
        data_dir=tmp_path, admin_key="admin-secret", lease_timeout_s=LEASE_TIMEOUT_S
    )
    with TestClient(create_app(settings)) as client:
        register = {"worker_id": "w1", "session": "s1", "capabilities": {}, "slots": 1}
        assert client.post("/api/workers/register", json=register, headers=ADMIN).is_success
        spec = {"type": "command", "config": {"command": "true"}, "id": "t1"}
        assert client.post("/api/tasks", json=spec, headers=ADMIN).status_code == 201
        yield client


def assignments(api: TestClient) -> list[dict[str, object]]:
    found = api.get("/api/workers/w1/assignments", headers=ADMIN).json()
    assert isinstance(found, list)
    return found


def test_an_assignment_carries_what_its_lease_has_left(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    [fresh] = assignments(api)
    assert 0 < float(fresh["lease_timeout_s"]) <= LEASE_TIMEOUT_S  # type: ignore[arg-type]
    later = time.time() + LEASE_TIMEOUT_S - 4.0
    monkeypatch.setattr(worker_api, "time", SimpleNamespace(time=lambda: later))
    [late] = assignments(api)
    assert float(late["lease_timeout_s"]) <= 4.0  # type: ignore[arg-type]


def test_a_lease_that_could_not_be_renewed_in_time_is_not_handed_out(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # heartbeats every 2 s with a 10 s lease: 1.5 s left is too little to renew
    over = time.time() + LEASE_TIMEOUT_S - 1.5
    monkeypatch.setattr(worker_api, "time", SimpleNamespace(time=lambda: over))
    assert assignments(api) == []
