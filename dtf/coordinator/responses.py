"""JSON responses encoded with msgspec (faster than the framework's encoder)."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import Response


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(msgspec.json.encode(content), status_code, media_type="application/json")


def error_response(
    status_code: int, message: str, *, field: str | None = None, kind: str
) -> Response:
    """The one error shape: ``{"error": {"message", "field", "type"}}``."""
    return json_response({"error": {"message": message, "field": field, "type": kind}}, status_code)
