"""Coordinator endpoints, reconnect backoff and worker settings validation."""

from __future__ import annotations

import random
from typing import Any

import pytest

from dtf.errors import InvalidRequest
from dtf.worker.connection import Backoff, Endpoints
from dtf.worker.settings import WorkerSettings


@pytest.mark.parametrize(
    ("url", "websocket_url", "heartbeat_url"),
    [
        # plain http
        (
            "http://127.0.0.1:8080",
            "ws://127.0.0.1:8080/api/workers/ws",
            "http://127.0.0.1:8080/api/workers/w%2F1/heartbeat",
        ),
        # https behind a path prefix, trailing slash
        (
            "https://ci.example/dtf/",
            "wss://ci.example/dtf/api/workers/ws",
            "https://ci.example/dtf/api/workers/w%2F1/heartbeat",
        ),
        # given as a WebSocket URL
        (
            "ws://127.0.0.1:9000",
            "ws://127.0.0.1:9000/api/workers/ws",
            "http://127.0.0.1:9000/api/workers/w%2F1/heartbeat",
        ),
    ],
)
def test_endpoints(url: str, websocket_url: str, heartbeat_url: str) -> None:
    endpoints = Endpoints.parse(url)
    assert endpoints.websocket_url == websocket_url
    assert endpoints.heartbeat_url("w/1") == heartbeat_url


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://host", "http://", ""])
def test_bad_coordinator_url_is_named(url: str) -> None:
    with pytest.raises(InvalidRequest, match="coordinator URL") as excinfo:
        Endpoints.parse(url)
    assert repr(url) in excinfo.value.message


def test_backoff_grows_to_the_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_backoff_survives_endless_failures() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(2))
    delays = [backoff.next_delay() for _ in range(5_000)]
    assert all(15.0 <= delay <= 30.0 for delay in delays[-100:])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"coordinator_urls": []}, "coordinator_urls"),  # nowhere to connect
        ({"coordinator_urls": ["localhost:8080"]}, "coordinator_urls"),  # no scheme
        ({"api_key": ""}, "api_key"),  # no key
        ({"slots": 0}, "slots"),  # no capacity
        ({"reconnect_min_delay_s": 5.0, "reconnect_max_delay_s": 1.0}, "reconnect_min_delay_s"),
    ],
)
def test_settings_refuse_bad_values(overrides: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {"coordinator_urls": ["http://127.0.0.1:8080"], "api_key": "k"}
    with pytest.raises(InvalidRequest) as excinfo:
        WorkerSettings(**{**values, **overrides})
    assert excinfo.value.field == field


def test_settings_defaults() -> None:
    settings = WorkerSettings(["http://127.0.0.1:1", "http://127.0.0.1:2"], "key")
    assert settings.slots == 1
    assert settings.worker_id
    assert [e.base_url for e in settings.endpoints] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
