"""Run a coordinator and workers on this machine: ``dtf up``, ``dtf demo`` and the tests."""

from dtf.local.cluster import ClusterError, ClusterSettings, LocalCluster

__all__ = ["ClusterError", "ClusterSettings", "LocalCluster"]
