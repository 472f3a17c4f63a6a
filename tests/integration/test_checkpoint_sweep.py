"""Superseded checkpoint blobs are deleted: the store's sweep on real files, and a
coordinator sweeping the saves a task made before its latest."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dtf.coordinator.checkpoint_grants import GrantIssuer
from dtf.coordinator.checkpoint_store import INCOMING_PREFIX, CheckpointStore, Swept
from dtf.coordinator.checkpoint_sweeper import sweep_checkpoints
from dtf.coordinator.server import create_app
from dtf.coordinator.settings import CoordinatorSettings
from dtf.core.model import LeaseRef
from dtf.core.records import TaskRecord
from dtf.testing.waiting import wait_for

pytestmark = pytest.mark.integration

ADMIN_KEY = "admin-secret"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
HOUR_S = 3600.0


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_sweep_deletes_old_unkept_blobs_and_stale_temporary_files(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, max_bytes=1000)
    kept, old, young = (store.put(data) for data in (b"latest", b"superseded", b"just saved"))
    for digest in (kept, old):
        age(store.path(digest), HOUR_S)
    stale = store.path(old).parent / f"{INCOMING_PREFIX}crashed"
    stale.write_bytes(b"half a blob")
    age(stale, HOUR_S)

    swept = store.sweep({kept}, cutoff=time.time() - 60)

    assert swept == Swept(removed=2, freed_bytes=len(b"superseded") + len(b"half a blob"), kept=2)
    assert not store.path(old).exists() and not stale.exists()
    assert store.get(kept) == b"latest" and store.get(young) == b"just saved"


def test_storing_the_same_bytes_again_renews_the_blob_against_a_sweep(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, max_bytes=1000)
    digest = store.put(b"same state")
    age(store.path(digest), HOUR_S)
    assert store.put(b"same state") == digest
    assert store.sweep(set(), cutoff=time.time() - 60).removed == 0
    assert store.get(digest) == b"same state"


def test_a_sweep_of_an_empty_store_finds_nothing(tmp_path: Path) -> None:
    assert CheckpointStore(tmp_path / "never-written", max_bytes=10).sweep(set(), 0.0) == Swept(
        0, 0, 0
    )


def test_an_entry_that_cannot_be_deleted_is_left_and_the_sweep_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(tmp_path, max_bytes=1000)
    old = store.put(b"superseded")
    odd = store.path("ab" * 32)
    odd.mkdir(parents=True)  # a directory where a blob should be: unlink fails
    for path in (store.path(old), odd):
        age(path, HOUR_S)
    swept = store.sweep(set(), cutoff=time.time() - 60)
    assert (swept.removed, swept.kept) == (1, 1)
    assert not store.path(old).exists() and odd.is_dir()
    assert "cannot delete" in caplog.text


def test_the_sweeper_outlives_a_failed_sweep(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, max_bytes=1000)
    old = store.put(b"superseded")
    age(store.path(old), HOUR_S)
    calls: list[int] = []

    def tasks() -> list[TaskRecord]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the first look at the state fails")
        return []

    async def run() -> None:
        sweeper = asyncio.create_task(
            sweep_checkpoints(store, tasks, interval_s=0.01, grace_s=60.0)
        )
        try:
            for _ in range(500):
                if not store.path(old).exists():
                    return
                await asyncio.sleep(0.01)
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)

    asyncio.run(run())
    assert len(calls) >= 2 and not store.path(old).exists()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    settings = CoordinatorSettings(
        data_dir=tmp_path,
        admin_key=ADMIN_KEY,
        checkpoint_sweep_interval_s=0.05,
        checkpoint_grace_s=HOUR_S / 2,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_coordinator_deletes_the_saves_before_a_tasks_latest(
    api: TestClient, tmp_path: Path
) -> None:
    register = {"worker_id": "w1", "session": "s1", "capabilities": {}, "slots": 1}
    assert api.post("/api/workers/register", json=register, headers=ADMIN).is_success
    spec = {"type": "command", "config": {"command": "true"}, "id": "train"}
    assert api.post("/api/tasks", json=spec, headers=ADMIN).status_code == 201
    [assign] = api.get("/api/workers/w1/assignments", headers=ADMIN).json()
    grant = assign["checkpoint"]
    headers = {"Authorization": f"Bearer {grant['token']}", "Content-Type": "application/json"}
    lease = LeaseRef("train", assign["attempt"], assign["fence"])
    assert grant["token"] == GrantIssuer(ADMIN_KEY).token(lease)
    params = {"attempt": lease.attempt, "fence": lease.fence}
    store = CheckpointStore(tmp_path / "checkpoints", max_bytes=1000)
    for step in (1, 2, 3):
        body = f'{{"step": {step}}}'.encode()
        saved = api.post(
            "/api/tasks/train/checkpoints", content=body, headers=headers, params=params
        )
        assert saved.status_code == 201, saved.text
    digests = [hashlib.sha256(f'{{"step": {step}}}'.encode()).hexdigest() for step in (1, 2, 3)]
    for digest in digests:  # as if saved an hour ago: past the grace
        age(store.path(digest), HOUR_S)

    wait_for(
        lambda: not any(store.path(d).exists() for d in digests[:2]),
        30,
        "the sweep to delete the two superseded saves",
    )
    assert store.path(digests[2]).exists()
    latest = api.get("/api/tasks/train/checkpoints/latest", headers=headers)
    assert latest.json() == {"step": 3}
    gone = api.get(f"/api/checkpoints/{digests[0]}", headers=ADMIN)
    assert gone.status_code == 404
