"""Where the worker talks to a coordinator, how long it waits between tries,
and the channel of one registered session."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from dtf.errors import InvalidRequest
from dtf.protocol import WorkerMessage, encode_frame, take_queued

WS_PATH = "/api/workers/ws"
_HTTP_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


@dataclass(frozen=True)
class Endpoints:
    """One coordinator's worker channel and heartbeat URLs."""

    base_url: str

    @classmethod
    def parse(cls, url: str) -> Endpoints:
        parts = urlsplit(url.strip())
        if parts.scheme not in _HTTP_SCHEMES or not parts.netloc:
            raise InvalidRequest(
                f"coordinator URL {url!r} is not an http(s):// or ws(s):// URL with a host; "
                "give one like http://127.0.0.1:8080",
                field="coordinator_urls",
            )
        path = parts.path.rstrip("/")
        return cls(f"{_HTTP_SCHEMES[parts.scheme]}://{parts.netloc}{path}")

    @property
    def websocket_url(self) -> str:
        return "ws" + self.base_url.removeprefix("http") + WS_PATH

    def heartbeat_url(self, worker_id: str) -> str:
        return f"{self.base_url}/api/workers/{quote(worker_id, safe='')}/heartbeat"


class Backoff:
    """Capped exponential delays with jitter: each delay is drawn from the upper
    half of ``min_s * 2**failures`` (capped at ``max_s``), so many workers
    reconnecting after one outage spread out instead of arriving together."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s, self.max_s = min_s, max_s
        self.rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.min_s * 2.0**self.failures)
        self.failures = min(self.failures + 1, 60)
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


class Channel:
    """One registered session: outgoing messages queue up and one task sends them."""

    def __init__(self, websocket: ClientConnection, session: str) -> None:
        self.websocket = websocket
        self.session = session
        self.outbox: asyncio.Queue[WorkerMessage] = asyncio.Queue()

    def send(self, message: WorkerMessage) -> None:
        self.outbox.put_nowait(message)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                batch = take_queued(self.outbox, await self.outbox.get())
                await self.websocket.send(encode_frame(batch))
