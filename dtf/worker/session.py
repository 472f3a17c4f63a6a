"""Reaching a coordinator: open the WebSocket, register, and come back after
every lost connection.

``connect_until_stopped`` rotates through the coordinator URLs with capped
exponential backoff, forever, until the agent is stopped; when an
established session ends and there are other URLs, the next one is tried at
once (its coordinator most likely died). What a session does once
registered is the agent's (``dtf.worker.agent``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from dtf.protocol import (
    ErrorMessage,
    Register,
    Registered,
    coordinator_message_decoder,
    json_encoder,
)
from dtf.worker.connection import Backoff, Endpoints
from dtf.worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0
MIN_SESSION_FOR_QUICK_SWITCH_S = 1.0
CLOSE_TIMEOUT_S = 2.0
REGISTER_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


async def connect_until_stopped(
    settings: WorkerSettings,
    stopping: asyncio.Event,
    serve: Callable[[Endpoints], Awaitable[bool]],
) -> None:
    """``serve`` one coordinator after another until ``stopping`` is set;
    ``serve`` returns False when registration failed."""
    endpoints = settings.endpoints
    backoff = Backoff(settings.reconnect_min_delay_s, settings.reconnect_max_delay_s)
    index = 0
    while not stopping.is_set():
        target = endpoints[index % len(endpoints)]
        began = time.monotonic()
        try:
            registered = await serve(target)
        except InvalidStatus as exc:
            log_refusal(target, exc.response.status_code, exc)
            registered = False
        except (OSError, TimeoutError, WebSocketException, msgspec.DecodeError) as exc:
            logger.warning("cannot reach coordinator %s: %s", target.base_url, exc)
            registered = False
        index += 1
        if registered:
            backoff.reset()
            lasted_s = time.monotonic() - began
            if len(endpoints) > 1 and lasted_s >= MIN_SESSION_FOR_QUICK_SWITCH_S:
                continue  # a long session ended: try another coordinator at once
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), backoff.next_delay())


def open_connection(endpoints: Endpoints, api_key: str) -> connect:
    """The WebSocket to one coordinator, as an async context manager."""
    return connect(
        endpoints.websocket_url,
        additional_headers={"Authorization": f"Bearer {api_key}"},
        open_timeout=OPEN_TIMEOUT_S,
        close_timeout=CLOSE_TIMEOUT_S,
        max_size=MAX_MESSAGE_BYTES,
        compression=None,
    )


async def register(websocket: ClientConnection, message: Register) -> Registered | None:
    """Send ``message`` and wait for the reply; None when the coordinator refused."""
    await websocket.send(json_encoder.encode(message))
    reply = coordinator_message_decoder.decode(
        await asyncio.wait_for(websocket.recv(), REGISTER_TIMEOUT_S)
    )
    if isinstance(reply, Registered):
        logger.info(
            "worker %s registered with session %s holding %d attempts",
            message.worker_id,
            message.session,
            len(message.held),
            extra={"event": "registered"},
        )
        return reply
    detail = reply.message if isinstance(reply, ErrorMessage) else type(reply).__name__
    logger.error("coordinator refused registration of worker %s: %s", message.worker_id, detail)
    return None


def log_refusal(target: Endpoints, status_code: int, exc: Exception) -> None:
    if status_code in (401, 403):
        logger.error(
            "coordinator %s refused this worker's API key (HTTP %d); pass a key with the "
            "worker role (--api-key or DTF_API_KEY)",
            target.base_url,
            status_code,
        )
    else:
        logger.warning("coordinator %s refused the connection: %s", target.base_url, exc)
