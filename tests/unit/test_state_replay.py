"""Replay determinism across processes: a journal rebuilds the same state under any
``PYTHONHASHSEED``, so every coordinator in a cluster holds the same state."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from dtf.core import commands as c
from dtf.core.state import State, StateConfig
from dtf.testing.simulation import SimulationConfig, run_simulation

REPLAY_FROM_STDIN = """
import hashlib, sys
import msgspec
from dtf.core import commands as c
from dtf.core.state import State, StateConfig
state = State(StateConfig(lease_timeout_s=10.0, worker_timeout_s=30.0))
for seq, data in enumerate(msgspec.msgpack.decode(sys.stdin.buffer.read(), type=list[bytes]), 1):
    state.apply(c.decode(data), seq=seq)
print(hashlib.sha256(state.snapshot()).hexdigest())
"""


@pytest.fixture(scope="module")
def journal() -> list[bytes]:
    """A few thousand commands from a faulty fleet: every command type, retries with jitter."""
    return run_simulation(SimulationConfig(seed=3, workers=10, tasks=120)).journal


def replay_hash(journal: list[bytes]) -> str:
    state = State(StateConfig(lease_timeout_s=10.0, worker_timeout_s=30.0))
    for seq, data in enumerate(journal, 1):
        state.apply(c.decode(data), seq=seq)
    return hashlib.sha256(state.snapshot()).hexdigest()


def test_replaying_twice_in_one_process_agrees(journal: list[bytes]) -> None:
    assert replay_hash(journal) == replay_hash(journal)


@pytest.mark.parametrize("hash_seed", ["0", "1", "4242"])
def test_replay_under_another_hash_seed_gives_the_same_snapshot(
    journal: list[bytes], hash_seed: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", REPLAY_FROM_STDIN],
        input=msgspec.msgpack.encode(journal),
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.decode().strip() == replay_hash(journal)
