"""Fixtures shared by the integration tests that talk to real etcd members."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dtf.testing.etcd import EtcdCluster, require_etcd


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd member shared by a test module (tests keep to key prefixes of their own)."""
    require_etcd()
    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as cluster:
        cluster.wait_healthy(20.0)
        yield cluster


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A three-member etcd cluster of the test's own (for tests that kill members)."""
    require_etcd()
    with EtcdCluster(tmp_path / "etcd", size=3) as cluster:
        cluster.wait_healthy(20.0)
        yield cluster
