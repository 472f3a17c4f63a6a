"""The records dtf's etcd adapter speaks in, and their translation to and from aetcd's
protobuf messages: key-values, watch events, and transaction compares and operations.

Import these from ``dtf.cluster.etcd``, which re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from aetcd import rpc  # type: ignore[import-untyped]


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    kv: KeyValue


@dataclass(frozen=True)
class Compare:
    """``target`` of ``key`` equals ``expected``; built by the ``*_equals`` functions."""

    key: bytes
    target: Literal["VALUE", "VERSION", "CREATE"]
    expected: bytes | int


@dataclass(frozen=True)
class Op:
    """One request of a transaction branch; built by ``put_op``, ``get_op``, ``delete_op``."""

    kind: Literal["put", "get", "delete"]
    key: bytes
    value: bytes = b""
    lease: int | None = None


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    gets: list[KeyValue | None]


class EtcdMember(TypedDict):
    id: int
    name: str
    client_urls: list[str]
    peer_urls: list[str]
    is_leader: bool


def value_equals(key: bytes, value: bytes) -> Compare:
    return Compare(key, "VALUE", value)


def version_equals(key: bytes, version: int) -> Compare:
    """Version 0 means the key is absent."""
    return Compare(key, "VERSION", version)


def create_revision_equals(key: bytes, revision: int) -> Compare:
    return Compare(key, "CREATE", revision)


def put_op(key: bytes, value: bytes, lease: int | None = None) -> Op:
    return Op("put", key, value, lease)


def get_op(key: bytes) -> Op:
    return Op("get", key)


def delete_op(key: bytes) -> Op:
    return Op("delete", key)


def compare_message(compare: Compare) -> Any:
    field = {"VALUE": "value", "VERSION": "version", "CREATE": "create_revision"}[compare.target]
    return rpc.Compare(
        key=compare.key,
        result=rpc.Compare.EQUAL,
        target=getattr(rpc.Compare, compare.target),
        **{field: compare.expected},
    )


def op_message(op: Op) -> Any:
    if op.kind == "put":
        return rpc.RequestOp(
            request_put=rpc.PutRequest(key=op.key, value=op.value, lease=op.lease or 0)
        )
    if op.kind == "get":
        return rpc.RequestOp(request_range=rpc.RangeRequest(key=op.key))
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=op.key))


def key_value(kv: Any) -> KeyValue:
    return KeyValue(
        key=bytes(kv.key),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )


def watch_events(response: Any) -> list[WatchEvent]:
    return [
        WatchEvent("delete" if event.type == rpc.Event.DELETE else "put", key_value(event.kv))
        for event in response.events
    ]
