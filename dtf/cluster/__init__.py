"""Coordinator cluster: state replicated through etcd, leader election, node registry."""
