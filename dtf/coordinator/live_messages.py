"""Messages of the live channel ``/ws`` (dashboards, scripts, ``dtf watch``-like tools).

Clients send JSON objects tagged by ``type``; a ``request_id`` they choose is
echoed in the reply. The coordinator answers requests and, for the topics a
client subscribed to, pushes updates as they are applied. Every message from
the coordinator is a JSON object with a ``type``.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec
from msgspec import Meta, Struct


class Topic(enum.StrEnum):
    TASKS = "tasks"
    WORKERS = "workers"
    BREAKERS = "breakers"
    CLUSTER = "cluster"  # cluster_status_update and leadership_update


class Authenticate(Struct, frozen=True, tag="authenticate", forbid_unknown_fields=True):
    """First message of a client that could not send an ``Authorization`` header (a browser)."""

    key: str
    request_id: str | None = None


class GetStatus(Struct, frozen=True, tag="get_status", forbid_unknown_fields=True):
    request_id: str | None = None


class GetClusterStatus(Struct, frozen=True, tag="get_cluster_status", forbid_unknown_fields=True):
    """As ``GET /api/cluster/status``."""

    request_id: str | None = None


class GetAggregatedResults(
    Struct, frozen=True, tag="get_aggregated_results", forbid_unknown_fields=True
):
    """As ``GET /api/results/aggregate``: statistics of metric samples per group."""

    by: Annotated[list[str], Meta(max_length=10)] = []
    metric: str | None = None
    run_id: str | None = None
    since: float | None = None
    request_id: str | None = None


class Subscribe(Struct, frozen=True, tag="subscribe", forbid_unknown_fields=True):
    topics: Annotated[list[Topic], Meta(min_length=1)]
    request_id: str | None = None


class Unsubscribe(Struct, frozen=True, tag="unsubscribe", forbid_unknown_fields=True):
    topics: Annotated[list[Topic], Meta(min_length=1)]
    request_id: str | None = None


ClientMessage = (
    Authenticate | GetStatus | GetClusterStatus | GetAggregatedResults | Subscribe | Unsubscribe
)

client_message_decoder = msgspec.json.Decoder(ClientMessage)
