"""Cluster settings from flags and the YAML high_availability block."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtf.cli.cluster_options import ClusterFlags
from dtf.cluster.settings import cluster_settings, host_node_id, load_ha_config
from dtf.coordinator.server import state_config
from dtf.coordinator.settings import CoordinatorSettings
from dtf.core.state import StateConfig
from dtf.errors import InvalidRequest

HA_YAML = """
high_availability:
  cluster: prod
  node_id: coord-a
  advertise_url: http://10.0.0.5:8080
  lease_ttl_s: 2
  max_coordinator_losses: 5
  etcd:
    endpoints: [http://10.0.0.5:2379, http://10.0.0.6:2379]
    user: dtf
    password_env: TEST_DTF_ETCD_PASSWORD
"""


def test_flags_alone_make_a_cluster_with_defaults_from_host_and_port() -> None:
    flags = ClusterFlags(cluster="lab", etcd="http://127.0.0.1:2379,http://127.0.0.1:22379")
    settings = flags.settings("0.0.0.0", 8081)
    assert settings is not None
    assert settings.name == "lab"
    assert settings.etcd.endpoints == ("http://127.0.0.1:2379", "http://127.0.0.1:22379")
    assert settings.advertise_url == "http://127.0.0.1:8081"
    assert settings.node_id == host_node_id(8081)
    assert settings.node_id.endswith("-8081")
    assert settings.lease_ttl_s == 1
    assert settings.max_coordinator_losses == 3


def test_no_cluster_flags_means_standalone() -> None:
    assert ClusterFlags().settings("127.0.0.1", 8080) is None


def test_yaml_block_is_read_and_flags_override_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_DTF_ETCD_PASSWORD", "s3cret")
    path = tmp_path / "ha.yaml"
    path.write_text(HA_YAML, encoding="utf-8")
    settings = ClusterFlags(ha_config=path, node_id="coord-b").settings("127.0.0.1", 8080)
    assert settings is not None
    assert (settings.name, settings.node_id, settings.lease_ttl_s) == ("prod", "coord-b", 2)
    assert settings.advertise_url == "http://10.0.0.5:8080"
    assert settings.etcd.endpoints == ("http://10.0.0.5:2379", "http://10.0.0.6:2379")
    assert (settings.etcd.user, settings.etcd.password) == ("dtf", "s3cret")
    assert settings.max_coordinator_losses == 5
    flagged = ClusterFlags(ha_config=path, max_coordinator_losses=0).settings("127.0.0.1", 8080)
    assert flagged is not None and flagged.max_coordinator_losses == 0


def test_a_cluster_node_journals_its_max_coordinator_losses(tmp_path: Path) -> None:
    cluster = ClusterFlags(cluster="lab", etcd="http://127.0.0.1:2379", max_coordinator_losses=7)
    settings = CoordinatorSettings(tmp_path, cluster=cluster.settings("127.0.0.1", 8080))
    assert state_config(settings).max_coordinator_losses == 7
    assert state_config(CoordinatorSettings(tmp_path)) == StateConfig()


def test_missing_password_variable_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ha.yaml"
    path.write_text(HA_YAML, encoding="utf-8")
    with pytest.raises(InvalidRequest, match="TEST_DTF_ETCD_PASSWORD"):
        cluster_settings(load_ha_config(path), {}, default_url="http://x:1", default_node_id="n")


def test_cluster_without_etcd_says_how_to_give_it() -> None:
    with pytest.raises(InvalidRequest, match="--etcd"):
        ClusterFlags(cluster="lab").settings("127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"cluster": "bad name!"}, "cluster name"),
        ({"advertise": "10.0.0.5:8080"}, "advertise URL"),
        ({"lease_ttl_s": 0}, "lease TTL"),
        ({"max_coordinator_losses": -1}, "max_coordinator_losses -1 is outside"),
        ({"max_coordinator_losses": "many"}, "max_coordinator_losses 'many' is not a whole"),
    ],
)
def test_bad_values_are_refused_with_their_name(override: dict[str, object], message: str) -> None:
    overrides = {"etcd": "http://127.0.0.1:2379", **override}
    with pytest.raises(InvalidRequest, match=message):
        cluster_settings({}, overrides, default_url="http://127.0.0.1:1", default_node_id="n")


def test_a_file_without_the_block_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("coordinator: {}\n", encoding="utf-8")
    with pytest.raises(InvalidRequest, match="high_availability"):
        load_ha_config(path)
