"""Read-your-writes across a cluster's coordinators.

Every HTTP response says how far this coordinator has applied the log
(``X-DTF-Applied-Seq``). A client that sends the highest position it has seen
back as ``X-DTF-Min-Seq`` is answered only once this coordinator has applied
that far, so a read from a lagging follower never shows an older state than
the client already saw. A node that cannot catch up within ``max_wait_s``
answers 503 and the client tries the next coordinator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dtf.errors import DtfError
from dtf.protocol import APPLIED_SEQ_HEADER, MIN_SEQ_HEADER

APPLIED_HEADER = APPLIED_SEQ_HEADER.lower().encode()
MIN_SEQ = MIN_SEQ_HEADER.lower().encode()
MAX_WAIT_S = 2.0

WaitApplied = Callable[[int, float], Awaitable[None]]


class AppliedPosition:
    """ASGI middleware: waits for ``X-DTF-Min-Seq`` and stamps ``X-DTF-Applied-Seq``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        applied_seq: Callable[[], int],
        wait_applied: WaitApplied | None,
        max_wait_s: float = MAX_WAIT_S,
    ) -> None:
        self.app = app
        self.applied_seq = applied_seq
        self.wait_applied = wait_applied
        self.max_wait_s = max_wait_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = _min_seq(scope)
        if wanted is not None and wanted > self.applied_seq() and self.wait_applied is not None:
            try:
                await self.wait_applied(wanted, self.max_wait_s)
            except DtfError as exc:
                await _refuse(send, exc)
                return

        async def stamped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((APPLIED_HEADER, str(self.applied_seq()).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, stamped_send)


def _min_seq(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == MIN_SEQ and value.isdigit():
            return int(value)
    return None


async def _refuse(send: Send, exc: DtfError) -> None:
    message = f"{exc.message} (this node has not yet applied the log position you already saw)"
    body = msgspec.json.encode(
        {"error": {"message": message, "field": None, "type": type(exc).__name__}}
    )
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
